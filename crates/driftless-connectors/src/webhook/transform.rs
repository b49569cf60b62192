//! Pure wire mapping of the webhook connector (contract section 12): the request body, its
//! HMAC-SHA256 signature, and what an answer means; and the opt-in batch shape (`batch_size` > 1,
//! `docs/fanout.md`): one signed body holding many pushes, answered with one result per push.

use crate::{Failure, Push, PushOutcome};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Driftless-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The JSON body of one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    pub channel: String,
    pub sku: String,
    pub quantity: i64,
    pub compare_quantity: Option<i64>,
    pub idempotency_key: String,
}

/// The JSON body of a batch: the channel once, then the pushes in the order the hub chose. A
/// receiver tells the two shapes apart by the `pushes` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub channel: String,
    pub pushes: Vec<BatchItem>,
}

/// One push inside a batch: the single body without the channel, with its own key, so that a
/// receiver deduplicates and compares per item exactly as it does for single pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub sku: String,
    pub quantity: i64,
    pub compare_quantity: Option<i64>,
    pub idempotency_key: String,
}

/// A receiver's `2xx` answer to a batch: one result per push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub results: Vec<ItemResult>,
}

/// What became of one push of a batch. `status` means what the HTTP status of that push sent
/// alone would mean; the other members are what that answer's headers or body would carry.
/// Unknown members are ignored so that receivers can say more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub idempotency_key: String,
    pub status: u16,
    /// With 409: what the channel shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_quantity: Option<i64>,
    /// With 409, optional: who changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// With 429/503: seconds to wait (the `Retry-After` of a single push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    /// With any other error: a message for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The channel's answer to a compare failure (409).
#[derive(Debug, Deserialize)]
struct Conflict {
    current_quantity: Option<i64>,
    /// Not in the contract's minimum; a channel that knows who changed the value may say so.
    #[serde(default)]
    changed_by: Option<String>,
}

pub fn body(p: &Push) -> Vec<u8> {
    let b = PushBody {
        channel: p.channel.clone(),
        sku: p.sku.clone(),
        quantity: p.quantity,
        compare_quantity: p.compare,
        idempotency_key: p.idempotency_key.clone(),
    };
    // Serialising plain strings and integers cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The body of a batch. Every push of a batch belongs to one channel (one dispatcher sends it).
pub fn batch_body(pushes: &[Push]) -> Vec<u8> {
    let b = BatchBody {
        channel: pushes
            .first()
            .map(|p| p.channel.clone())
            .unwrap_or_default(),
        pushes: pushes
            .iter()
            .map(|p| BatchItem {
                sku: p.sku.clone(),
                quantity: p.quantity,
                compare_quantity: p.compare,
                idempotency_key: p.idempotency_key.clone(),
            })
            .collect(),
    };
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The `Idempotency-Key` of a batch: `dlb-` + 32 hex of SHA-256 over the pushes' keys in order.
/// A push's key already fixes its whole item (channel, sku, version, quantity, compare), so the
/// same batch key always means the same body; a receiver may answer a repeated batch from it.
/// The dispatcher regroups pushes on retry, so receivers must deduplicate per item in any case.
pub fn batch_key(pushes: &[Push]) -> String {
    batch_key_of(pushes.iter().map(|p| p.idempotency_key.as_str()))
}

/// [`batch_key`] from the item keys, as a receiver holding a [`BatchBody`] computes it.
pub fn batch_key_of<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for k in keys {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
    }
    format!("dlb-{}", hex::encode(&h.finalize()[..16]))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; the error branch is unreachable but must not panic.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new_from_slice(&[0]).expect("one byte"))
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Checks a signature header in constant time; what a receiving channel runs.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hexsig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hexsig) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// What an HTTP answer means for the push.
pub fn interpret(status: u16, retry_after: Option<&str>, body: &[u8]) -> PushOutcome {
    let conflict = (status == 409)
        .then(|| serde_json::from_slice::<Conflict>(body).ok())
        .flatten();
    outcome(
        status,
        retry_after.map(|v| crate::http::retry_after(Some(v), Duration::ZERO)),
        conflict.as_ref().and_then(|c| c.current_quantity),
        conflict.and_then(|c| c.changed_by),
        &snippet(body),
    )
}

/// One status and what came with it, for a single push or one item of a batch: the same table,
/// so a push means the same whichever shape carried it. `retry_after` is `None` when the channel
/// stated no wait (a 429 then waits with backoff; a 503 is then an ordinary 5xx).
fn outcome(
    status: u16,
    retry_after: Option<Duration>,
    current: Option<i64>,
    changed_by: Option<String>,
    message: &str,
) -> PushOutcome {
    match status {
        200..=299 => PushOutcome::Acked,
        409 => PushOutcome::CompareFailed {
            current,
            actor: changed_by.filter(|s| !s.is_empty() && s.len() <= 200),
        },
        429 => PushOutcome::RetryAfter(retry_after.unwrap_or_default()),
        503 if retry_after.is_some() => PushOutcome::RetryAfter(retry_after.unwrap_or_default()),
        408 | 425 | 500..=599 => PushOutcome::Failed(Failure::retry(format!("HTTP {status}"))),
        // Other 4xx: the channel refused this request (bad signature, unknown sku). Not applied;
        // retried with backoff (the contract), as the cause may be fixed on the other side.
        _ => PushOutcome::Failed(Failure::refused(format!("HTTP {status}: {message}"))),
    }
}

/// What the HTTP answer to a batch means for each of its pushes, in order.
///
/// A status other than 2xx is about the request as a whole and applies to every push: 429 (and
/// 503 with `Retry-After`) wait, 408/425/5xx may have been applied (in doubt), any other 4xx (a
/// bad signature, a body the receiver does not take, 413) is refused and retried with backoff. A
/// 409 of the whole request is such a 4xx: compare failures are per item. A 2xx answers per item by idempotency key; a push the answer
/// does not name (or an answer that is not the documented JSON) may have been applied and is in
/// doubt, so the dispatcher repeats it with the same key.
pub fn interpret_batch(
    pushes: &[Push],
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Vec<PushOutcome> {
    let whole = |o: PushOutcome| vec![o; pushes.len()];
    if !(200..=299).contains(&status) {
        let o = match status {
            409 => PushOutcome::Failed(Failure::refused(format!(
                "HTTP 409 for a whole batch: {}",
                snippet(body)
            ))),
            _ => interpret(status, retry_after, body),
        };
        return whole(o);
    }
    let answer = match serde_json::from_slice::<BatchAnswer>(body) {
        Ok(a) => a,
        Err(e) => {
            return whole(PushOutcome::Failed(Failure::retry(format!(
                "HTTP {status} without a per-push results array ({e})"
            ))));
        }
    };
    let mut by_key: HashMap<&str, &ItemResult> = HashMap::with_capacity(answer.results.len());
    for r in &answer.results {
        by_key.insert(r.idempotency_key.as_str(), r);
    }
    pushes
        .iter()
        .map(|p| match by_key.get(p.idempotency_key.as_str()) {
            Some(r) => outcome(
                r.status,
                r.retry_after
                    .map(|s| crate::http::retry_after_secs(Some(s), Duration::ZERO)),
                r.current_quantity,
                r.changed_by.clone(),
                &r.error
                    .as_deref()
                    .map(|e| snippet(e.as_bytes()))
                    .unwrap_or_default(),
            ),
            None => PushOutcome::Failed(Failure::retry(format!(
                "HTTP {status}, but the answer has no result for this push"
            ))),
        })
        .collect()
}

/// The start of an error body, for the operator; never the whole of a large body.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> Push {
        Push {
            channel: "shop".into(),
            sku: "TEE-1".into(),
            quantity: 12,
            compare: None,
            idempotency_key: "dl-1".into(),
        }
    }

    #[test]
    fn body_shape_has_null_compare_on_first_push() {
        let v: serde_json::Value = serde_json::from_slice(&body(&push())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel": "shop", "sku": "TEE-1", "quantity": 12,
                "compare_quantity": null, "idempotency_key": "dl-1"})
        );
    }

    #[test]
    fn signature_round_trip_and_tamper() {
        let b = body(&push());
        let s = signature(b"k", &b);
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert!(verify(b"k", &b, &s));
        assert!(!verify(b"other", &b, &s));
        let mut t = b.clone();
        t[5] ^= 1;
        assert!(!verify(b"k", &t, &s));
        assert!(!verify(b"k", &b, "sha1=00"));
        assert!(!verify(b"k", &b, "sha256=zz"));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn item(sku: &str, compare: Option<i64>, key: &str) -> Push {
        Push {
            sku: sku.into(),
            compare,
            idempotency_key: key.into(),
            ..push()
        }
    }

    #[test]
    fn batch_body_shape_and_key() {
        let ps = [item("A", None, "dl-a"), item("B", Some(3), "dl-b")];
        let v: serde_json::Value = serde_json::from_slice(&batch_body(&ps)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel": "shop", "pushes": [
                {"sku": "A", "quantity": 12, "compare_quantity": null, "idempotency_key": "dl-a"},
                {"sku": "B", "quantity": 12, "compare_quantity": 3, "idempotency_key": "dl-b"}]})
        );
        let k = batch_key(&ps);
        assert!(k.starts_with("dlb-") && k.len() == 36, "{k}");
        assert_eq!(k, batch_key_of(["dl-a", "dl-b"].into_iter()));
        // Order and boundaries matter: another batch is another key.
        assert_ne!(k, batch_key(&[ps[1].clone(), ps[0].clone()]));
        assert_ne!(
            batch_key_of(["ab", "c"].into_iter()),
            batch_key_of(["a", "bc"].into_iter())
        );
        // A single body is not a batch body and the other way round.
        assert!(serde_json::from_slice::<BatchBody>(&body(&push())).is_err());
        assert!(serde_json::from_slice::<PushBody>(&batch_body(&ps)).is_err());
    }

    #[test]
    fn batch_answers_are_per_item() {
        let ps = [
            item("A", None, "k1"),
            item("B", Some(5), "k2"),
            item("C", None, "k3"),
            item("D", None, "k4"),
            item("E", None, "k5"),
            item("F", None, "k6"),
        ];
        // In another order than the request, and without k6: matched by key.
        let answer = br#"{"results": [
            {"idempotency_key": "k2", "status": 409, "current_quantity": 2, "changed_by": "ann"},
            {"idempotency_key": "k1", "status": 200},
            {"idempotency_key": "k3", "status": 429, "retry_after": 2.5},
            {"idempotency_key": "k4", "status": 500, "error": "disk full"},
            {"idempotency_key": "k5", "status": 422, "error": "unknown sku", "extra": true}]}"#;
        let o = interpret_batch(&ps, 200, None, answer);
        assert_eq!(o[0], PushOutcome::Acked);
        assert_eq!(
            o[1],
            PushOutcome::CompareFailed {
                current: Some(2),
                actor: Some("ann".into())
            }
        );
        assert_eq!(o[2], PushOutcome::RetryAfter(Duration::from_millis(2500)));
        assert!(matches!(&o[3], PushOutcome::Failed(f) if f.retryable && f.in_doubt));
        assert!(
            matches!(&o[4], PushOutcome::Failed(f) if f.retryable && !f.in_doubt && f.message.contains("unknown sku"))
        );
        assert!(matches!(&o[5], PushOutcome::Failed(f) if f.retryable && f.in_doubt));
    }

    #[test]
    fn whole_batch_answers_apply_to_every_item() {
        let ps = [item("A", None, "k1"), item("B", Some(5), "k2")];
        let all =
            |o: Vec<PushOutcome>, f: &dyn Fn(&PushOutcome) -> bool| o.len() == 2 && o.iter().all(f);
        assert!(all(interpret_batch(&ps, 429, Some("3"), b""), &|o| *o
            == PushOutcome::RetryAfter(Duration::from_secs(3))));
        assert!(all(interpret_batch(&ps, 503, Some("0"), b""), &|o| *o
            == PushOutcome::RetryAfter(Duration::ZERO)));
        // A 503 that names no wait is an ordinary 5xx.
        assert!(all(interpret_batch(&ps, 503, None, b""), &|o| matches!(
            o,
            PushOutcome::Failed(f) if f.retryable && f.in_doubt
        )));
        assert!(all(interpret_batch(&ps, 502, None, b""), &|o| matches!(
            o,
            PushOutcome::Failed(f) if f.retryable && f.in_doubt
        )));
        // A whole-request 409 is not a compare failure of every sku.
        assert!(all(
            interpret_batch(&ps, 409, None, br#"{"current_quantity": 1}"#),
            &|o| matches!(o, PushOutcome::Failed(f) if f.retryable && !f.in_doubt)
        ));
        assert!(all(
            interpret_batch(&ps, 401, None, b"bad sig"),
            &|o| matches!(
                o,
                PushOutcome::Failed(f) if f.retryable && !f.in_doubt
            )
        ));
        // A 2xx that is not the documented answer may have applied anything: in doubt.
        assert!(all(
            interpret_batch(&ps, 200, None, b"{\"ok\":true}"),
            &|o| matches!(
                o,
                PushOutcome::Failed(f) if f.retryable && f.in_doubt
            )
        ));
    }

    #[test]
    fn answers() {
        assert_eq!(interpret(204, None, b""), PushOutcome::Acked);
        assert_eq!(
            interpret(
                409,
                None,
                br#"{"current_quantity": 7, "changed_by": "ann"}"#
            ),
            PushOutcome::CompareFailed {
                current: Some(7),
                actor: Some("ann".into())
            }
        );
        assert_eq!(
            interpret(409, None, b"nope"),
            PushOutcome::CompareFailed {
                current: None,
                actor: None
            }
        );
        assert_eq!(
            interpret(429, Some("2"), b""),
            PushOutcome::RetryAfter(Duration::from_secs(2))
        );
        // Throttling: as told, or zero (backoff) when no wait is named.
        assert_eq!(
            interpret(429, None, b""),
            PushOutcome::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            interpret(503, Some("0"), b""),
            PushOutcome::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            interpret(503, Some("4"), b""),
            PushOutcome::RetryAfter(Duration::from_secs(4))
        );
        assert!(
            matches!(interpret(503, None, b""), PushOutcome::Failed(f) if f.retryable && f.in_doubt)
        );
        assert!(matches!(interpret(500, None, b""), PushOutcome::Failed(f) if f.retryable));
        // Other 4xx: refused, not applied, retried with backoff.
        for s in [400, 401, 404, 413, 422] {
            assert!(
                matches!(interpret(s, None, b"bad sig"), PushOutcome::Failed(f) if f.retryable && !f.in_doubt),
                "{s}"
            );
        }
    }
}
