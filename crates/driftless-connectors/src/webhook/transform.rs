//! Pure wire mapping of the webhook connector (contract section 12): the request body, its
//! HMAC-SHA256 signature, and what an answer means.

use crate::{Failure, Push, PushOutcome};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
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
    match status {
        200..=299 => PushOutcome::Acked,
        409 => match serde_json::from_slice::<Conflict>(body) {
            Ok(c) => PushOutcome::CompareFailed {
                current: c.current_quantity,
                actor: c.changed_by.filter(|s| !s.is_empty() && s.len() <= 200),
            },
            Err(_) => PushOutcome::CompareFailed {
                current: None,
                actor: None,
            },
        },
        429 | 503 => PushOutcome::RetryAfter(crate::http::retry_after(
            retry_after,
            Duration::from_secs(1),
        )),
        408 | 425 | 500..=599 => PushOutcome::Failed(Failure::retry(format!("HTTP {status}"))),
        // Other 4xx: the channel refuses this request as such (bad signature, unknown sku); a retry
        // of the same bytes will be refused again.
        _ => PushOutcome::Failed(Failure::permanent(format!(
            "HTTP {status}: {}",
            snippet(body)
        ))),
    }
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
        assert!(matches!(interpret(500, None, b""), PushOutcome::Failed(f) if f.retryable));
        assert!(matches!(interpret(401, None, b"bad sig"), PushOutcome::Failed(f) if !f.retryable));
    }
}
