//! The probable cause of one drifting row (DESIGN §7/§13), decided for the system the drift was
//! attributed to (`S`, with upstream `U`), by these rules in this order — the first that holds wins:
//!
//! 1. `count_variance`: the drift entered at `physical -> <head>`: the head system disagrees with
//!    the count. It is a count or shrink problem, not an integration one; no other rule applies.
//! 2. `out_of_sequence`: in `S`'s change log, the last sync (an integration write carrying
//!    `source_at`) wrote data older than data an integration had already written to the same sku
//!    and location (a machine write without `source_at`, such as a checkout decrement, carries
//!    data as of its own time), and that stale write accounts for at least as much of the delta
//!    (`|stale - newest|`) as the lag of the newest data does (`|newest - expected|`); otherwise
//!    the integration is mostly behind and the lag rule decides.
//! 3. `manual_override`: a person (an actor not in `[audit] integration_actors`) wrote `S`'s value
//!    since the integration last synced it (its last write carrying `source_at`); a storefront's
//!    own checkout keeps decrementing a hand-set value, so the person's write need not be the
//!    very last. In a log without any `source_at`, the last write must be the person's.
//! 4. `uom_mismatch`: `S` is off by a configured pack factor: its value times (or divided by,
//!    floored) a unit factor that applies to the sku (`[[units]]`, the system's snapshot unit, a
//!    channel's selling pack) gives the expected value — or one of the values expected earlier in
//!    the lag window, when the conversion accounts for at least as much of the delta as the lag
//!    (`|earlier - actual| >= |expected - earlier|`; otherwise it is `sync_lag`).
//! 5. `committed_not_mapped` (only for systems judged on availability: `available` or a channel
//!    quantity): phantom availability. With the upstream's committed history (its change log's
//!    `committed` column) and a scheduled hop, the storefront's connector is replayed from its last
//!    sync under both mappings, and only the phantom one ends at the value shown; without it, the
//!    last sync wrote the channel quantity as if nothing were committed (reconstructed at its
//!    `source_at`); when the logs cannot tell, `S` is off by exactly `U`'s committed quantity, or
//!    shows the channel quantity computed as if nothing were committed.
//! 6. `sync_lag`: `S` equals a value its expected value had earlier, within the hop's window
//!    (`latency_sla` plus the schedule's interval of the `U -> S` hop; the whole log when the hop
//!    is not documented) or as of the data of `S`'s last sync when that is older (an integration
//!    silent beyond its SLA is still lagging), reconstructed from `U`'s change log; or `S` is
//!    ahead of `U`: its newest writes are local activity (checkouts) within the window and the
//!    value before them is the expected value (orders `U` has not downloaded yet, whatever `U`
//!    took in before); or `S`'s last sync carried data from inside the window and only local
//!    activity followed (`U` moved since in a way its log does not show).
//! 7. `unexplained`: none of the above.
//!
//! Where two rules measure shares of one delta (2: stale write and lag; 4: pack factor and lag;
//! 5: phantom availability at the last sync and lag), the larger share names the cause and the
//! other is reported beside it ([`Probable::also`]) when its share alone is drift.
//!
//! Why this order: the change log of `S` names who wrote the current value, which is direct
//! evidence, so it goes first (an out-of-sequence write usually also equals an earlier upstream
//! value: it *is* one, so it must be tested before lag). The exact arithmetic signatures of a
//! configured transform come next. Equality with some earlier value is the weakest evidence — the
//! longer the window, the more values to match by chance — so lag is tested last.

use crate::engine::{Change, Group, Measure, Past};

/// The causes of §13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    CountVariance,
    UomMismatch,
    CommittedNotMapped,
    SyncLag,
    OutOfSequence,
    ManualOverride,
    Unexplained,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::CountVariance,
        Cause::UomMismatch,
        Cause::CommittedNotMapped,
        Cause::SyncLag,
        Cause::OutOfSequence,
        Cause::ManualOverride,
        Cause::Unexplained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::CountVariance => "count_variance",
            Cause::UomMismatch => "uom_mismatch",
            Cause::CommittedNotMapped => "committed_not_mapped",
            Cause::SyncLag => "sync_lag",
            Cause::OutOfSequence => "out_of_sequence",
            Cause::ManualOverride => "manual_override",
            Cause::Unexplained => "unexplained",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The probable cause of one row, and a second cause beside it where two overlap on the key:
/// the one with the larger share of the delta is `main`, the other is `also` when its own share is
/// drift (over the key's thresholds), as the simulator's ground truth splits compound drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probable {
    pub main: Cause,
    pub also: Option<Cause>,
}

impl From<Cause> for Probable {
    fn from(main: Cause) -> Probable {
        Probable { main, also: None }
    }
}

/// Two causes sharing the delta: `a` accounts for `share_a` of it, `b` for `share_b`; the larger
/// share names the cause (ties go to `a`), the other is reported beside it when its share alone
/// would be drift.
fn split(g: &Group<'_, '_>, k: u32, expected: i64, a: (Cause, i64), b: (Cause, i64)) -> Probable {
    let (main, other) = if a.1.abs() >= b.1.abs() {
        (a, b)
    } else {
        (b, a)
    };
    let t = g.threshold(k);
    Probable {
        main: main.0,
        also: (other.1 != 0 && crate::engine::over(&t, other.1, expected)).then_some(other.0),
    }
}

/// The cause for system `s` (not the head) at key `k`, showing `actual` where `expected` was due.
pub(crate) fn probable(
    g: &Group<'_, '_>,
    s: usize,
    k: u32,
    actual: i64,
    expected: i64,
) -> Probable {
    let ctx = g.ctx();
    let log = g.writes(s, k);
    let machine = |a: &str| ctx.audit.is_integration(a);
    if !log.is_empty() {
        if let Some((stale, lag)) = out_of_sequence(g, &log, expected) {
            return split(
                g,
                k,
                expected,
                (Cause::OutOfSequence, stale),
                (Cause::SyncLag, lag),
            );
        }
        // The value a person wrote lives on until the integration next syncs the sku (a
        // storefront's own checkout keeps decrementing it): so a person's write after the last
        // sync (an integration write carrying `source_at`) counts, not only the very last write.
        // Logs without `source_at` cannot show syncs; there only the last write counts.
        let since_sync = match log
            .iter()
            .rposition(|e| machine(e.actor) && e.source_at.is_some())
        {
            Some(i) => &log[i + 1..],
            None if log.iter().all(|e| e.source_at.is_none()) => &log[log.len() - 1..],
            None => &log[..],
        };
        if since_sync.iter().any(|e| !machine(e.actor)) {
            return Cause::ManualOverride.into();
        }
    }
    // What the system should have shown at earlier moments of the hop's window: a system that is
    // both late and wrongly converted is off by a pack factor from one of these.
    let last_sync = log
        .iter()
        .rev()
        .find(|e| machine(e.actor) && e.source_at.is_some())
        .and_then(|e| e.source_at);
    let earlier = earlier_expected(g, s, k, expected, last_sync);
    if uom(g, s, actual, expected) {
        return Cause::UomMismatch.into();
    }
    // Off by a factor from an earlier value: both a conversion error and lag; the larger share
    // of the delta names the cause (as for a stale write).
    if let Some(e) = earlier.iter().copied().find(|e| uom(g, s, actual, *e)) {
        return split(
            g,
            k,
            expected,
            (Cause::UomMismatch, actual - e),
            (Cause::SyncLag, e - expected),
        );
    }
    // Phantom availability is about what may be sold: only systems judged on availability (ATP
    // or a channel quantity) can show it; a stock count off by the committed quantity is more
    // likely a coincidence than a mapping error.
    let sells = matches!(ctx.systems[s].measure, Measure::Atp | Measure::Channel);
    let committed = if sells { g.upstream_committed(s, k) } else { 0 };
    // The connector mapped availability as if nothing were committed: that much of the delta is
    // the mapping's; the rest is the upstream having moved since (lag). Read from the change logs
    // first, the upstream as it was (its committed stock may since have been released: the
    // mapping still shows); today's committed quantity decides only when they cannot tell.
    let phantom = if sells {
        phantom_at_last_sync(g, s, k, &log, actual)
    } else {
        Phantom::Unknown
    };
    match phantom {
        Phantom::Share(phantom) => {
            return split(
                g,
                k,
                expected,
                (Cause::CommittedNotMapped, phantom),
                (Cause::SyncLag, actual - expected - phantom),
            );
        }
        Phantom::Unknown
            if committed > 0
                && ((actual - expected).abs() == committed
                    || g.channel_without_committed(s, k, &[]) == Some(actual)) =>
        {
            return Cause::CommittedNotMapped.into();
        }
        Phantom::Not | Phantom::Unknown => {}
    }
    if earlier.contains(&actual)
        || ahead_of_upstream(g, s, &log, actual, expected)
        || synced_in_window(g, s, &log, actual)
    {
        return Cause::SyncLag.into();
    }
    Cause::Unexplained.into()
}

/// `S`'s last sync carried data from inside the hop's (documented) window and only local
/// activity has been written since: no rule above found what that sync wrote wrong, so `S` was
/// in step with its upstream then, and the upstream has moved since in a way its change log does
/// not show (a committed quantity, which change logs rarely carry); the next sync is still due
/// within the hop's SLA. That is lag.
fn synced_in_window(g: &Group<'_, '_>, s: usize, log: &[Change<'_>], actual: i64) -> bool {
    let ctx = g.ctx();
    let machine = |a: &str| ctx.audit.is_integration(a);
    let Some(w) = ctx.systems[s].window_ms else {
        return false;
    };
    if log.last().is_none_or(|e| e.quantity != actual) {
        return false;
    }
    let Some(i) = log
        .iter()
        .rposition(|e| machine(e.actor) && e.source_at.is_some())
    else {
        return false;
    };
    log[i]
        .source_at
        .is_some_and(|t| t >= ctx.at_ms.saturating_sub(w))
        && log[i + 1..].iter().all(|e| machine(e.actor))
}

/// Lag in the other direction: `S` is *ahead* of its upstream. The newest writes of `S`'s log
/// are local activity (machine writes without `source_at`: a storefront's checkout decrements)
/// that the upstream has not taken in yet, and before them `S` showed exactly the expected value:
/// the difference is those writes. The upstream may have taken in earlier local activity, or moved
/// for any other reason, before; what counts is that the value before the writes not yet taken in
/// is the expected value now. Those writes must lie within the hop's window (an upstream takes in
/// orders within it), unless nothing but local activity has happened since `S`'s last sync (the
/// upstream has then taken in nothing since, however long ago).
fn ahead_of_upstream(
    g: &Group<'_, '_>,
    s: usize,
    log: &[Change<'_>],
    actual: i64,
    expected: i64,
) -> bool {
    let ctx = g.ctx();
    let machine = |a: &str| ctx.audit.is_integration(a);
    let local = |e: &Change<'_>| machine(e.actor) && e.source_at.is_none();
    // The log must end at the value shown, or it does not describe it.
    if log.last().is_none_or(|e| e.quantity != actual) {
        return false;
    }
    let start = ctx.systems[s]
        .window_ms
        .map_or(i64::MIN, |w| ctx.at_ms.saturating_sub(w));
    // `log[i..]` is local activity; the value before it is `log[i - 1]`'s.
    for i in (1..log.len()).rev() {
        if !local(&log[i]) {
            return false;
        }
        let before = &log[i - 1];
        if before.quantity == expected {
            // Every write after `before` is local activity (checked on the way here).
            let since_sync = machine(before.actor) && before.source_at.is_some();
            if log[i].at >= start || since_sync {
                return true;
            }
        }
    }
    false
}

/// The last sync (an integration write carrying `source_at`) wrote data older than data an
/// integration had already written (a machine write without `source_at`, such as a checkout
/// decrement, carries data as of its own time) — and that stale write accounts for at least as
/// much of the drift as the lag behind the newest data does. When the newest data is further off
/// than the stale write moved it, the integration is mostly behind, and the lag rule decides.
///
/// Returns the two shares of the delta, `(stale - newest, newest - expected)`, when it holds.
fn out_of_sequence(g: &Group<'_, '_>, log: &[Change<'_>], expected: i64) -> Option<(i64, i64)> {
    let machine = |a: &str| g.ctx().audit.is_integration(a);
    let i = log
        .iter()
        .rposition(|e| machine(e.actor) && e.source_at.is_some())?;
    // A person's write since replaced the stale value: it no longer accounts for anything.
    if log[i + 1..].iter().any(|e| !machine(e.actor)) {
        return None;
    }
    let src = log[i].source_at.unwrap_or(log[i].at);
    let newest = log[..i]
        .iter()
        .filter(|e| machine(e.actor))
        .max_by_key(|e| (e.source_at.unwrap_or(e.at), e.at));
    match newest {
        // Both the stale write and the lag behind it contribute; the larger share names the
        // cause: `stale - newest` is the out-of-sequence part, `newest - expected` the lag.
        Some(n) if n.source_at.unwrap_or(n.at) > src => {
            let stale = log[i].quantity;
            ((stale - n.quantity).abs() >= (n.quantity - expected).abs())
                .then_some((stale - n.quantity, n.quantity - expected))
        }
        _ => None,
    }
}

/// What the change logs say of a storefront's connector mapping availability as if nothing were
/// committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phantom {
    /// It does: this much of the delta is what the storefront shows minus what it would show had
    /// the mapping been right; the rest is lag.
    Share(i64),
    /// The replay of the connector shows the mapping made no difference to what it shows now.
    Not,
    /// The logs cannot tell: today's values decide.
    Unknown,
}

/// Whether a storefront's connector maps availability as if nothing were committed, and how
/// much of the delta that accounts for ([`Phantom`]).
///
/// With the upstream's committed history and a scheduled hop, the connector is replayed from its
/// last sync under both mappings ([`replay`]); it maps phantom availability when only that
/// replay ends at the value shown. Otherwise, the last sync (value `v`, data of `t`) wrote the
/// channel quantity of the upstream's on-hand at `t` where the right quantity differed.
fn phantom_at_last_sync(
    g: &Group<'_, '_>,
    s: usize,
    k: u32,
    log: &[Change<'_>],
    actual: i64,
) -> Phantom {
    let ctx = g.ctx();
    let up = g.upstream(s);
    if up == usize::MAX
        || ctx.systems[s].measure != Measure::Channel
        || ctx.systems[up].channel_like
    {
        return Phantom::Unknown;
    }
    let Some(i) = log
        .iter()
        .rposition(|e| ctx.audit.is_integration(e.actor) && e.source_at.is_some())
    else {
        return Phantom::Unknown;
    };
    let sync = &log[i];
    let t = sync.source_at.unwrap_or(sync.at);
    let Some(at_sync) = upstream_at(g, s, k, t) else {
        return Phantom::Unknown;
    };
    let history = !at_sync.is_empty() && at_sync.iter().all(|p| p.committed.is_some());
    if history && let Some(every) = ctx.systems[s].every_ms.filter(|e| *e > 0) {
        // A poll and an upstream change logged in the same second may have happened in either
        // order: both are replayed, and either may explain what is shown.
        let runs = [false, true].map(|reads_before| {
            (
                replay(g, s, k, &log[i..], every, true, reads_before),
                replay(g, s, k, &log[i..], every, false, reads_before),
            )
        });
        if let Some((_, Some(r))) = runs
            .iter()
            .find(|(p, r)| *p == Some(actual) && r.is_some_and(|r| r != actual))
        {
            return Phantom::Share(actual - r);
        }
        return if runs.iter().any(|(_, r)| *r == Some(actual)) {
            Phantom::Not
        } else {
            Phantom::Unknown
        };
    }
    match (
        g.expected(s, k, &at_sync),
        g.channel_without_committed(s, k, &at_sync),
    ) {
        (Some(w), Some(wo)) if wo == sync.quantity && w != wo => Phantom::Share(wo - w),
        _ => Phantom::Unknown,
    }
}

/// Most polls replayed for one key: a connector polling every minute over four weeks.
const MAX_POLLS: i64 = 40_320;

/// What the storefront would show now had its connector mapped availability as if nothing were
/// committed (`phantom`) or rightly, replayed from its last sync (`since[0]`). The connector
/// polls on the hop's schedule (in phase with that sync's data time) and writes its value
/// only when it differs from its own last write, which is why a poll that changes nothing
/// leaves no row; the storefront's own sales (checkout rows in `since`) lower what it shows in
/// between. The replay starts from what that mapping would have written at the sync. `reads_before`:
/// a poll reads the upstream as it was just before its second (else after it).
/// `None` when the upstream's value at some poll is unknown or there are too many polls.
fn replay(
    g: &Group<'_, '_>,
    s: usize,
    k: u32,
    since: &[Change<'_>],
    every: i64,
    phantom: bool,
    reads_before: bool,
) -> Option<i64> {
    let ctx = g.ctx();
    let value_at = |t: i64| -> Option<i64> {
        let ov = upstream_at(g, s, k, if reads_before { t - 1 } else { t })?;
        if phantom {
            g.channel_without_committed(s, k, &ov)
        } else {
            g.expected(s, k, &ov)
        }
    };
    let t0 = since[0].source_at.unwrap_or(since[0].at);
    if (ctx.at_ms - t0) / every > MAX_POLLS {
        return None;
    }
    let mut written = value_at(t0)?;
    let mut shown = written;
    let sales = since[1..]
        .iter()
        .zip(since)
        .filter(|(e, _)| e.source_at.is_none() && ctx.audit.is_integration(e.actor));
    let mut poll = t0 + every;
    // Polls up to each sale, the sale, and after the last sale the polls up to the audit's moment.
    for (sale, prev) in sales {
        while poll < sale.at {
            let v = value_at(poll)?;
            if v != written {
                (written, shown) = (v, v);
            }
            poll += every;
        }
        shown -= prev.quantity - sale.quantity;
    }
    while poll <= ctx.at_ms {
        let v = value_at(poll)?;
        if v != written {
            (written, shown) = (v, v);
        }
        poll += every;
    }
    Some(shown)
}

/// The upstream's values behind channel system `s` at key `k` as of moment `t`, from its change
/// log; `None` when a feeding key's log starts after `t` (its value then is unknown).
fn upstream_at(g: &Group<'_, '_>, s: usize, k: u32, t: i64) -> Option<Vec<Past>> {
    let up = g.upstream(s);
    let mut ov = Vec::new();
    for kk in g.feeding(s, k) {
        let l = g.log(up, kk);
        if l.is_empty() {
            continue;
        }
        ov.push(Past::of(kk, l.iter().rev().find(|c| c.at <= t)?));
    }
    Some(ov)
}

/// Off by a pack factor: `actual * f == expected`, `actual == floor(expected / f)` or
/// `expected * f == actual` for a factor `f > 1` that applies to the sku.
fn uom(g: &Group<'_, '_>, s: usize, actual: i64, expected: i64) -> bool {
    // Equal values are not off by anything (both 0 would match every factor).
    if actual == expected {
        return false;
    }
    let ctx = g.ctx();
    let sku = g.sku();
    let mut factors: Vec<i64> = ctx
        .units
        .rules()
        .iter()
        .filter(|r| r.sku.matches(sku))
        .map(|r| i64::from(r.factor))
        .collect();
    let sys = &ctx.systems[s];
    factors.extend(
        sys.unit_factors
            .iter()
            .filter(|(g, _)| g.as_ref().is_none_or(|g| g.matches(sku)))
            .map(|(_, f)| i64::from(*f)),
    );
    if sys.measure == Measure::Channel
        && let Ok(sk) = driftless_core::Sku::parse(sku)
    {
        factors.push(i64::from(sys.spec.terms(&sk).2));
    }
    factors.into_iter().filter(|f| *f > 1).any(|f| {
        actual.checked_mul(f) == Some(expected)
            || (actual > 0 && actual == expected.div_euclid(f))
            || expected.checked_mul(f) == Some(actual)
    })
}

/// The values `s` would have been expected to show at earlier moments of the lag window (the
/// window's start, every upstream change inside it, and the data time of `s`'s last sync when that
/// is older), reconstructed from the upstream's change log; without the current `expected`.
/// Empty when the upstream has no log for this key.
fn earlier_expected(
    g: &Group<'_, '_>,
    s: usize,
    k: u32,
    expected: i64,
    last_sync: Option<i64>,
) -> Vec<i64> {
    let ctx = g.ctx();
    let up = g.upstream(s);
    if up == usize::MAX {
        return Vec::new();
    }
    let sys = &ctx.systems[s];
    let upstream_keys = if sys.measure == Measure::Channel && !ctx.systems[up].channel_like {
        g.feeding(s, k)
    } else {
        vec![k]
    };
    let logs: Vec<(u32, Vec<crate::engine::Change<'_>>)> = upstream_keys
        .iter()
        .map(|kk| (*kk, g.log(up, *kk)))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if logs.is_empty() {
        return Vec::new();
    }
    let start = sys
        .window_ms
        .map_or(i64::MIN, |w| ctx.at_ms.saturating_sub(w));
    let mut moments: Vec<i64> = vec![start];
    // An integration silent for longer than its window still shows the upstream as of its last
    // sync's data: that moment counts even before the window (lag beyond the SLA is still lag).
    moments.extend(last_sync.filter(|t| *t < start));
    moments.extend(
        logs.iter()
            .flat_map(|(_, l)| l.iter().map(|c| c.at))
            .filter(|t| *t > start),
    );
    let mut out = Vec::new();
    let mut ov: Vec<Past> = Vec::new();
    for t in moments {
        ov.clear();
        for (kk, l) in &logs {
            if let Some(c) = l.iter().rev().find(|c| c.at <= t) {
                ov.push(Past::of(*kk, c));
            }
        }
        if ov.is_empty() {
            continue;
        }
        if let Some(e) = g.expected(s, k, &ov)
            && e != expected
            && !out.contains(&e)
        {
            out.push(e);
        }
    }
    out
}
