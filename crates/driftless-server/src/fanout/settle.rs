//! What a dispatcher makes of push results and observations: acknowledgements, retries with
//! backoff, throttling, compare failures, dead letters and `channel_override` incidents, each
//! turned into records for the store.

use super::backoff;
use super::dispatcher::{Dispatcher, Done, Unsettled};
use chrono::{DateTime, Utc};
use driftless_config::OnOverride;
use driftless_connectors::PushOutcome;
use driftless_core::Sku;
use driftless_store::Incident;
use driftless_store::outbox::{
    AckedPush, FailedPush, PushRecord, PushSample, RebasedPush, RefusedPush,
};
use std::time::{Duration, Instant};

impl Dispatcher {
    /// Records a batch of results in one transaction and updates the in-memory schedule.
    pub(super) async fn settle(&mut self, done: Vec<Done>) {
        let mut records = Vec::with_capacity(done.len());
        let mut skus = Vec::with_capacity(done.len());
        let mut acks: Vec<Option<(i64, i64)>> = Vec::with_capacity(done.len());
        let channel = self.id().to_owned();
        for d in done {
            acks.push(matches!(d.outcome, PushOutcome::Acked).then_some((d.version, d.quantity)));
            let sku = d.row.sku.clone();
            self.inflight.remove(&sku);
            if !matches!(d.outcome, PushOutcome::RetryAfter(_)) {
                self.throttled.remove(&sku);
            }
            match d.outcome.clone() {
                PushOutcome::Acked => {
                    self.cas_streak.remove(&sku);
                    records.push(PushRecord::Acked(AckedPush {
                        sku: sku.clone(),
                        version: d.version,
                        quantity: d.quantity,
                        at: d.at,
                        sample: PushSample {
                            channel: channel.clone(),
                            source: d.row.source.clone(),
                            occurred_nanos: d.row.occurred_nanos,
                            received_nanos: d.row.received_nanos,
                            changed_nanos: d.row.changed_nanos,
                            acked_nanos: d.at.timestamp_nanos_opt().unwrap_or(i64::MAX),
                        },
                    }));
                }
                PushOutcome::CompareFailed { current, actor } => {
                    records.extend(self.compare_failed(&d, current, actor.as_deref()));
                }
                PushOutcome::RetryAfter(told) => records.push(self.throttle(&d, told)),
                PushOutcome::Failed(f) => {
                    // A timeout, a dropped connection or a 5xx may have been applied: pin it.
                    let pin = if f.in_doubt {
                        Some((d.version, d.quantity))
                    } else {
                        d.row.pinned
                    };
                    records.push(self.failed(&d, f.message, f.retryable, pin));
                }
            }
            skus.push(sku);
        }
        if records.is_empty() {
            return;
        }
        for (s, ack) in skus.iter().zip(&acks) {
            let u = self.unsettled.entry(s.clone()).or_insert(Unsettled {
                batches: 0,
                acked: None,
            });
            u.batches += 1;
            // A later non-acknowledgement (a failure after an ack) must wait to be stored.
            u.acked = match (ack, u.acked) {
                (Some(a), Some(b)) if b.0 > a.0 => Some(b),
                (Some(a), _) => Some(*a),
                (None, _) => None,
            };
        }
        if let Some(tx) = &self.records_tx
            && tx.send((records, skus)).await.is_err()
        {
            tracing::error!(channel = %channel, "the recorder stopped; push results not recorded");
        }
    }

    fn failed(
        &mut self,
        d: &Done,
        message: String,
        retryable: bool,
        pinned: Option<(i64, i64)>,
    ) -> PushRecord {
        let row = &d.row;
        let attempts = row.attempts.saturating_add(1);
        let dead = !retryable || attempts >= self.cfg.max_attempts;
        let wait = backoff(attempts, self.opts.base_backoff, self.opts.max_backoff);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if !dead {
            self.retry(
                row.sku.clone(),
                next.timestamp_nanos_opt().unwrap_or(i64::MAX),
            );
        }
        let incident = dead.then(|| self.dead_letter(&row.sku, d.version, attempts, &message));
        PushRecord::Failed(FailedPush {
            sku: row.sku.clone(),
            version: row.version,
            pinned,
            attempts,
            next_attempt: next,
            error: message,
            dead: incident,
        })
    }

    /// The channel throttled the push (it refused before applying: nothing new is in doubt). It
    /// waits as told, or with backoff when the channel named no wait (or `0`, which would otherwise
    /// hammer it), pausing the whole channel, and spends no attempt; once the push has been
    /// throttled for longer than `throttle_budget` it goes to the dead-letter list.
    fn throttle(&mut self, d: &Done, told: Duration) -> PushRecord {
        let sku = &d.row.sku;
        let now = Instant::now();
        let (since, times) = {
            let t = self.throttled.entry(sku.clone()).or_insert((now, 0));
            t.1 = t.1.saturating_add(1);
            *t
        };
        let spent = now.saturating_duration_since(since);
        let budget = self.opts.throttle_budget;
        if spent >= budget {
            self.throttled.remove(sku);
            let msg = format!(
                "the channel throttled it {times} times over {:.1}s, longer than the {:.1}s budget",
                spent.as_secs_f64(),
                budget.as_secs_f64()
            );
            return self.failed(d, msg, false, d.row.pinned);
        }
        let wait = if told.is_zero() {
            backoff(times, self.opts.base_backoff, self.opts.max_backoff)
        } else {
            told
        }
        .min(budget - spent);
        let until = now + wait;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.retry(sku.clone(), next.timestamp_nanos_opt().unwrap_or(i64::MAX));
        PushRecord::Failed(FailedPush {
            sku: sku.clone(),
            version: d.row.version,
            pinned: d.row.pinned,
            // Throttling spends no attempt.
            attempts: d.row.attempts,
            next_attempt: next,
            error: format!(
                "throttled by the channel ({times} time(s) in {:.1}s); retrying in {}ms",
                spent.as_secs_f64(),
                wait.as_millis()
            ),
            dead: None,
        })
    }

    /// A compare failure. The first of a streak is an override: an incident, the channel's
    /// `on_override` policy, and (overwrite) a push again at once against the value the channel
    /// reported. Every compare failure counts as a failed attempt, and one that continues a streak
    /// (no acknowledgement since the last, and `attempts` not reset by a replay) moves the compare
    /// value without a new incident, backs off and dead-letters after `max_attempts`: a channel
    /// that refuses every compare, even against the value it reported, must not loop for ever.
    fn compare_failed(
        &mut self,
        d: &Done,
        current: Option<i64>,
        actor: Option<&str>,
    ) -> Vec<PushRecord> {
        let sku = d.row.sku.clone();
        let channel = self.id().to_owned();
        let attempts = d.row.attempts.saturating_add(1);
        let streak = self.cas_streak.entry(sku.clone()).or_default();
        // After a restart the streak is unknown: the next refusal is taken as the first again,
        // but `attempts` was stored, so the one after it still dead-letters.
        let first = *streak == 0 || d.row.attempts == 0;
        *streak = if first { 1 } else { streak.saturating_add(1) };
        let streak = *streak;
        let show =
            |v: Option<i64>| v.map_or_else(|| "an unknown value".to_owned(), |v| v.to_string());
        if first {
            let hold = self.cfg.on_override == OnOverride::Hold;
            let incident = override_incident(
                &channel,
                &sku,
                d.row.basis,
                current,
                actor,
                d.quantity,
                hold,
                "the channel refused the compare-and-set",
                d.at,
            );
            return vec![
                PushRecord::Rebased(RebasedPush {
                    sku: sku.clone(),
                    basis: current,
                    hold,
                    incident,
                }),
                // Counts the refusal; due at once, as the policy says.
                PushRecord::Refused(RefusedPush {
                    sku,
                    version: d.row.version,
                    basis: current,
                    attempts,
                    next_attempt: d.at,
                    error: format!(
                        "the channel refused the compare-and-set; it shows {}",
                        show(current)
                    ),
                    dead: None,
                }),
            ];
        }
        let message = format!(
            "the channel refused the compare-and-set {streak} times in a row (it shows {}, \
             compared against {})",
            show(current),
            show(d.row.basis)
        );
        let dead = attempts >= self.cfg.max_attempts;
        let wait = backoff(attempts, self.opts.base_backoff, self.opts.max_backoff);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if dead {
            self.cas_streak.remove(&sku);
        } else {
            self.retry(sku.clone(), next.timestamp_nanos_opt().unwrap_or(i64::MAX));
        }
        let dead = dead.then(|| self.dead_letter(&sku, d.version, attempts, &message));
        vec![PushRecord::Refused(RefusedPush {
            sku,
            version: d.row.version,
            basis: current,
            attempts,
            next_attempt: next,
            error: message,
            dead,
        })]
    }

    /// The incident of a push that gave up.
    fn dead_letter(&self, sku: &Sku, version: i64, attempts: u32, message: &str) -> Incident {
        Incident {
            kind: "dead_letter".into(),
            sku: Some(sku.clone()),
            location: None,
            system: Some(self.id().to_owned()),
            actor: None,
            event_id: None,
            detail: format!(
                "push of version {version} to channel `{}` gave up after {attempts} attempt(s): \
                 {message}; POST /v1/channels/{}/replay to retry",
                self.id(),
                self.id()
            ),
            at: Utc::now(),
        }
    }

    /// Observations that differ from the last acknowledged push for longer than the SLA.
    pub(super) async fn sweep(&mut self) {
        let before = Utc::now() - chrono::Duration::from_std(self.sla).unwrap_or_default();
        let list = match self.store.divergences(self.id(), before, 500).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(channel = self.id(), error = %e, "reading observations failed");
                return;
            }
        };
        if list.is_empty() {
            return;
        }
        let hold = self.cfg.on_override == OnOverride::Hold;
        let channel = self.id().to_owned();
        let records: Vec<PushRecord> = list
            .into_iter()
            .map(|d| {
                let why = format!(
                    "the channel has reported {} since {} (longer than the {}s SLA)",
                    d.observed,
                    d.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    self.sla.as_secs_f64()
                );
                PushRecord::Rebased(RebasedPush {
                    sku: d.sku.clone(),
                    basis: Some(d.observed),
                    hold,
                    incident: override_incident(
                        &channel,
                        &d.sku,
                        d.acked_quantity,
                        Some(d.observed),
                        d.actor.as_deref(),
                        d.acked_quantity.unwrap_or(0),
                        hold,
                        &why,
                        d.since,
                    ),
                })
            })
            .collect();
        if let Err(e) = self.store.outbox_record(&channel, &records).await.map(drop) {
            tracing::warn!(channel = %channel, error = %e, "recording overrides failed");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn override_incident(
    channel: &str,
    sku: &Sku,
    expected: Option<i64>,
    current: Option<i64>,
    actor: Option<&str>,
    pushing: i64,
    hold: bool,
    why: &str,
    at: DateTime<Utc>,
) -> Incident {
    let show = |v: Option<i64>| v.map_or_else(|| "an unknown value".to_owned(), |v| v.to_string());
    let delta = match (expected, current) {
        (Some(e), Some(c)) => format!(" ({:+})", c - e),
        _ => String::new(),
    };
    let policy = if hold {
        "policy hold: the hub stops pushing this sku until POST /v1/channels/{id}/replay".to_owned()
    } else {
        format!(
            "policy overwrite: the hub pushes {pushing} again with {} as the compare value",
            show(current)
        )
    };
    Incident {
        kind: "channel_override".into(),
        sku: Some(sku.clone()),
        location: None,
        system: Some(actor.map_or_else(|| channel.to_owned(), |a| format!("{channel}:{a}"))),
        actor: None,
        event_id: None,
        detail: format!(
            "channel `{channel}` shows {} where the hub last had {} acknowledged{delta}; changed by {}; {why}; {}",
            show(current),
            show(expected),
            actor.unwrap_or("someone unknown"),
            policy.replace("{id}", channel),
        ),
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_detail_says_who_when_how_much() {
        let i = override_incident(
            "shop",
            &Sku::parse("TEE").unwrap(),
            Some(10),
            Some(7),
            Some("ann"),
            12,
            false,
            "the channel refused the compare-and-set",
            Utc::now(),
        );
        assert_eq!(i.kind, "channel_override");
        assert!(i.detail.contains("shows 7") && i.detail.contains("(-3)"));
        assert!(i.detail.contains("ann") && i.detail.contains("overwrite"));
        assert_eq!(i.system.as_deref(), Some("shop:ann"));
    }
}
