//! The join and the judgement: per partition, every row of every file is gathered by sku and
//! location; each system of the chain is compared with the value expected from its *actual*
//! upstream (DESIGN §7/§13); the first system over threshold names the hand-off, and the cause
//! rules (see [`crate::cause`]) name the probable cause.
//!
//! Expected values, system `S` with upstream `U` (the physical count for the chain's head):
//! - `S` reports a state (`on_hand`, or `quantity` for a stock system; `committed`, ...): `U`'s
//!   value of that state at the same sku and location.
//! - `S` reports `available`: `U`'s ATP there (`on_hand - committed - reserved - unavailable`).
//! - `S` is a storefront or marketplace: the channel quantity (DESIGN §3) over `U`'s ATP at the
//!   channel's locations — or at the row's location when the file has one. A channel fed by
//!   another channel-like system mirrors it.
//! - A state missing from `U`'s file is taken from the nearest system further upstream that has
//!   it; a sku or location missing from `U`'s file counts as 0 there.
//! - The head is judged only where the baseline has the key (a cycle count covers part of the
//!   stock; keys it does not cover are counted as "not counted", not as drift).

use crate::cause::{self, Cause};
use crate::input::{AVAILABLE, COMMITTED, Kind, ON_HAND, REPORTED, RESERVED, SLOTS, UNAVAILABLE};
use crate::report::{Row, Values};
use crate::spill::FastHash;
use crate::{InputError, MAX_ERRORS};
use driftless_config::AuditSettings;
use driftless_config::audit::Threshold;
use driftless_core::{ChannelSpec, Sku, UnitTable};
use std::collections::HashMap;

/// What a system's reported value is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// A stock state of the upstream at the same key (slot index).
    State(usize),
    /// The upstream's available-to-promise at the same key.
    Atp,
    /// The channel quantity over the upstream's ATP.
    Channel,
}

/// One system of the chain, as the join sees it.
#[derive(Debug, Clone)]
pub(crate) struct SysInfo {
    pub id: String,
    pub measure: Measure,
    pub channel_like: bool,
    /// A channel-like system whose file has no location column: judged once per sku.
    pub channel_level: bool,
    pub spec: ChannelSpec,
    /// No `[[channels]]` entry: every location of the sku feeds it, nothing held back.
    pub all_locations: bool,
    /// The lag window of the hop from its upstream, in ms; `None` when no hop is documented.
    pub window_ms: Option<i64>,
    /// The hop's schedule interval in ms (a connector polling every N minutes), when it has one:
    /// the connector has read its upstream within the last interval even if it wrote nothing.
    pub every_ms: Option<i64>,
    pub handoff: String,
    /// Base units per unit of its configured snapshot unit(s), for the uom rule.
    pub unit_factors: Vec<(Option<driftless_core::Glob>, u32)>,
}

/// Everything a partition needs to judge its rows.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub systems: Vec<SysInfo>,
    pub kinds: Vec<Kind>,
    pub file_names: Vec<String>,
    pub audit: &'a AuditSettings,
    pub units: &'a UnitTable,
    pub at_ms: i64,
    /// A placeholder sku for channel quantities of channels without per-sku rules.
    pub any_sku: Sku,
}

/// What one partition found.
#[derive(Debug, Default)]
pub(crate) struct PartResult {
    pub rows: Vec<Row>,
    pub compared: u64,
    /// Per system (hand-off): `(drifting keys, abs units)`.
    pub handoffs: Vec<(u64, u64)>,
    /// Per system: judged keys with no row in its snapshot.
    pub absent: Vec<u64>,
    pub not_counted: u64,
    pub errors: Vec<InputError>,
    pub error_total: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Line in the snapshot; 0 when the system has no row for the key.
    line: u64,
    mask: u8,
    v: [i64; SLOTS],
}

const EMPTY: Slot = Slot {
    line: 0,
    mask: 0,
    v: [0; SLOTS],
};

#[derive(Debug)]
struct Entry<'a> {
    sku: &'a [u8],
    loc: &'a [u8],
    /// The location's first 8 bytes, so that most comparisons need not touch `loc`'s bytes.
    loc_key: u64,
    next: u32,
    baseline: Option<i64>,
    baseline_line: u64,
    /// Velocity class named by the baseline (index + 1), 0 when none.
    class: u8,
}

/// One change-log entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    pub system: usize,
    pub loc: &'a [u8],
    pub line: u64,
    pub at: i64,
    pub source_at: Option<i64>,
    pub quantity: i64,
    /// The system's committed quantity after the change, when its log carries it: with it, the
    /// upstream's availability at an earlier moment can be rebuilt, not only its on-hand.
    pub committed: Option<i64>,
    pub actor: &'a str,
}

const NONE: u32 = u32::MAX;

struct Decoder<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Decoder<'a> {
    fn u8(&mut self) -> u8 {
        let v = self.b[self.i];
        self.i += 1;
        v
    }
    fn u32(&mut self) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&self.b[self.i..self.i + 4]);
        self.i += 4;
        u32::from_le_bytes(w)
    }
    /// A zigzag LEB128 varint (see `input::fields::put_varint`).
    fn varint(&mut self) -> i64 {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.u8();
            z |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }
    fn i64(&mut self) -> i64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.b[self.i..self.i + 8]);
        self.i += 8;
        i64::from_le_bytes(w)
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u8() as usize;
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        s
    }
}

/// The joined rows of one partition.
struct Joined<'a> {
    n: usize,
    groups: HashMap<&'a [u8], u32, FastHash>,
    entries: Vec<Entry<'a>>,
    slots: Vec<Slot>,
    changes: HashMap<&'a [u8], Vec<Change<'a>>, FastHash>,
}

impl<'a> Joined<'a> {
    fn key(&mut self, sku: &'a [u8], loc: &'a [u8]) -> usize {
        use std::collections::hash_map::Entry as E;
        let idx = self.entries.len();
        let loc_key = prefix(loc);
        let head = match self.groups.entry(sku) {
            E::Occupied(mut o) => {
                let head = *o.get();
                let mut i = head;
                while i != NONE {
                    let e = &self.entries[i as usize];
                    if e.loc_key == loc_key
                        && e.loc.len() == loc.len()
                        && (loc.len() <= 8 || e.loc == loc)
                    {
                        return i as usize;
                    }
                    i = e.next;
                }
                o.insert(idx as u32);
                head
            }
            E::Vacant(v) => {
                v.insert(idx as u32);
                NONE
            }
        };
        self.entries.push(Entry {
            sku,
            loc,
            loc_key,
            next: head,
            baseline: None,
            baseline_line: 0,
            class: 0,
        });
        self.slots.extend(std::iter::repeat_n(EMPTY, self.n));
        idx
    }
}

fn prefix(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// Bytes of records joined at once: small enough that the join's hash table, entries and slots
/// stay in the CPU caches. A partition read back from the spill is split into sub-partitions of
/// about this size first (a sequential pass), which is several times faster than joining it whole
/// with a cache miss per record.
pub(crate) const SUB_BYTES: usize = 1 << 16;

/// Length of the record starting at `i`.
fn record_len(ctx: &Ctx<'_>, b: &[u8], i: usize) -> usize {
    let mut j = i + 1 + 4;
    j += 1 + b[j] as usize; // sku
    j += 1 + b[j] as usize; // location
    match ctx.kinds[b[i] as usize] {
        Kind::Baseline | Kind::Snapshot(_) => {
            let values = b[j].count_ones();
            j += 1;
            for _ in 0..values {
                while b[j] >= 0x80 {
                    j += 1;
                }
                j += 1;
            }
            if matches!(ctx.kinds[b[i] as usize], Kind::Baseline) {
                j += 1; // velocity class
            }
        }
        Kind::Changes(_) => {
            j += 8; // at
            j += 1 + if b[j] == 1 { 8 } else { 0 }; // source_at
            j += 8; // quantity
            j += 1 + if b[j] == 1 { 8 } else { 0 }; // committed
            j += 1 + b[j] as usize; // actor
        }
    }
    j - i
}

/// Judges one partition (its bytes from every reading worker), in cache-sized sub-partitions;
/// `scratch` keeps the sub-partition buffers between partitions so their memory is reused rather
/// than faulted in afresh each time.
pub(crate) fn run_partition(
    ctx: &Ctx<'_>,
    chunks: &[Vec<u8>],
    scratch: &mut Vec<Vec<u8>>,
    sub_bytes: usize,
) -> PartResult {
    let total: usize = chunks.iter().map(Vec::len).sum();
    let k = total.div_ceil(sub_bytes.max(1)).max(1);
    let n = ctx.systems.len();
    let mut acc = PartResult {
        handoffs: vec![(0, 0); n],
        absent: vec![0; n],
        ..PartResult::default()
    };
    if k == 1 && chunks.len() == 1 {
        crate::merge(&mut acc, run_sub(ctx, &chunks[0]));
        return acc;
    }
    while scratch.len() < k {
        scratch.push(Vec::with_capacity(sub_bytes + sub_bytes / 4));
    }
    for sub in scratch.iter_mut().take(k) {
        sub.clear();
    }
    for bytes in chunks {
        let mut i = 0;
        while i < bytes.len() {
            let len = record_len(ctx, bytes, i);
            let sku_len = bytes[i + 5] as usize;
            let sku = &bytes[i + 6..i + 6 + sku_len];
            // Other bits of the hash than the partition's, so the split is even.
            let s = crate::spill::bucket(crate::spill::hash_bytes(sku) & 0xffff_ffff, k);
            scratch[s].extend_from_slice(&bytes[i..i + len]);
            i += len;
        }
    }
    for sub in scratch.iter().take(k) {
        crate::merge(&mut acc, run_sub(ctx, sub));
    }
    acc
}

fn run_sub(ctx: &Ctx<'_>, bytes: &[u8]) -> PartResult {
    let n = ctx.systems.len();
    let mut out = PartResult {
        handoffs: vec![(0, 0); n],
        absent: vec![0; n],
        ..PartResult::default()
    };
    let mut j = Joined {
        n,
        groups: HashMap::with_capacity_and_hasher(bytes.len() / 64, FastHash),
        entries: Vec::with_capacity(bytes.len() / 48),
        slots: Vec::new(),
        changes: HashMap::with_hasher(FastHash),
    };
    let mut d = Decoder { b: bytes, i: 0 };
    let dup = |out: &mut PartResult, file: usize, line: u64, sku: &[u8], loc: &[u8], first: u64| {
        out.error_total += 1;
        if out.errors.len() < MAX_ERRORS {
            out.errors.push(InputError {
                file: ctx.file_names[file].clone(),
                line,
                column: 1,
                message: format!(
                    "duplicate key: sku `{}` at location `{}` already appears on line {first}",
                    String::from_utf8_lossy(sku),
                    String::from_utf8_lossy(loc)
                ),
            });
        }
    };
    while d.i < bytes.len() {
        let file = d.u8() as usize;
        let line = u64::from(d.u32());
        let sku = d.bytes();
        let loc = d.bytes();
        match ctx.kinds[file] {
            Kind::Baseline => {
                let mask = d.u8();
                let mut v = 0;
                for i in 0..SLOTS {
                    if mask & (1 << i) != 0 {
                        let x = d.varint();
                        if i == ON_HAND {
                            v = x;
                        }
                    }
                }
                let class = d.u8();
                let k = j.key(sku, loc);
                let e = &mut j.entries[k];
                if e.baseline.is_some() {
                    let first = e.baseline_line;
                    dup(&mut out, file, line, sku, loc, first);
                } else {
                    e.baseline = Some(v);
                    e.baseline_line = line;
                    e.class = class;
                }
            }
            Kind::Snapshot(s) => {
                let mask = d.u8();
                let mut v = [0i64; SLOTS];
                for (i, slot) in v.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 {
                        *slot = d.varint();
                    }
                }
                let k = j.key(sku, loc);
                let slot = &mut j.slots[k * n + s];
                if slot.line != 0 {
                    let first = slot.line;
                    dup(&mut out, file, line, sku, loc, first);
                } else {
                    *slot = Slot { line, mask, v };
                }
            }
            Kind::Changes(s) => {
                let at = d.i64();
                let source_at = if d.u8() == 1 { Some(d.i64()) } else { None };
                let quantity = d.i64();
                let committed = if d.u8() == 1 { Some(d.i64()) } else { None };
                let actor = std::str::from_utf8(d.bytes()).unwrap_or("");
                j.changes.entry(sku).or_default().push(Change {
                    system: s,
                    loc,
                    line,
                    at,
                    source_at,
                    quantity,
                    committed,
                    actor,
                });
            }
        }
    }
    if out.error_total > 0 {
        return out;
    }
    // Channel-level systems are judged once per sku, even for skus they do not list.
    if ctx.systems.iter().any(|s| s.channel_level) {
        let skus: Vec<&[u8]> = j.groups.keys().copied().collect();
        for sku in skus {
            j.key(sku, b"");
        }
    }
    let mut keys: Vec<u32> = Vec::new();
    let heads: Vec<u32> = j.groups.values().copied().collect();
    for head in heads {
        keys.clear();
        let mut i = head;
        while i != NONE {
            keys.push(i);
            i = j.entries[i as usize].next;
        }
        let sku_bytes = j.entries[head as usize].sku;
        let sku = std::str::from_utf8(sku_bytes).unwrap_or("");
        let changes = j.changes.get(sku_bytes).map_or(&[][..], Vec::as_slice);
        let g = Group {
            ctx,
            sku,
            keys: &keys,
            entries: &j.entries,
            slots: &j.slots,
            changes,
        };
        g.judge(&mut out);
    }
    out
}

/// All keys of one sku.
pub(crate) struct Group<'g, 'a> {
    ctx: &'g Ctx<'g>,
    sku: &'g str,
    keys: &'g [u32],
    entries: &'g [Entry<'a>],
    slots: &'g [Slot],
    changes: &'g [Change<'a>],
}

/// The physical count, as the chain's head's upstream.
const PHYS: usize = usize::MAX;

/// The upstream as it was at an earlier moment, at one key: its reported value then, and its
/// committed quantity then when its change log carries it (else today's is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Past {
    pub key: u32,
    pub value: i64,
    pub committed: Option<i64>,
}

impl Past {
    /// The upstream at key `key` as one change-log entry left it.
    pub(crate) fn of(key: u32, c: &Change<'_>) -> Past {
        Past {
            key,
            value: c.quantity,
            committed: c.committed,
        }
    }
}

/// Upstream values replaced for one evaluation.
pub(crate) type Overrides<'o> = &'o [Past];

impl Group<'_, '_> {
    fn slot(&self, k: u32, s: usize) -> &Slot {
        &self.slots[k as usize * self.ctx.systems.len() + s]
    }

    fn loc(&self, k: u32) -> &[u8] {
        self.entries[k as usize].loc
    }

    pub(crate) fn sku(&self) -> &str {
        self.sku
    }

    pub(crate) fn ctx(&self) -> &Ctx<'_> {
        self.ctx
    }

    /// The thresholds at key `k`: the velocity class the baseline names for it (for a channel-level
    /// key, the tightest its locations name), else the first class whose sku pattern matches.
    pub(crate) fn threshold(&self, k: u32) -> Threshold {
        let classes = &self.ctx.audit.classes;
        let named = |kk: u32| {
            let c = self.entries[kk as usize].class as usize;
            (c > 0).then(|| classes.get(c - 1)).flatten()
        };
        let class = if self.loc(k).is_empty() {
            self.keys
                .iter()
                .filter_map(|kk| named(*kk))
                .min_by_key(|c| (c.threshold.units, (c.threshold.pct * 1e6) as i64))
        } else {
            named(k)
        };
        class.map_or_else(
            || self.ctx.audit.threshold_for(self.sku),
            |c| c.threshold.clone(),
        )
    }

    /// Whether system `s` is compared at key `k`.
    fn judged(&self, s: usize, k: u32) -> bool {
        let sys = &self.ctx.systems[s];
        if self.slot(k, s).line != 0 {
            return true;
        }
        let loc = self.loc(k);
        if sys.channel_like {
            if sys.channel_level {
                loc.is_empty()
            } else {
                !loc.is_empty() && (sys.all_locations || self.feeds(sys, loc))
            }
        } else {
            !loc.is_empty()
        }
    }

    fn feeds(&self, sys: &SysInfo, loc: &[u8]) -> bool {
        sys.spec
            .locations
            .iter()
            .any(|l| l.as_str().as_bytes() == loc)
    }

    /// The value system `s` shows at `k` (`None`: no row).
    pub(crate) fn shown(&self, s: usize, k: u32) -> Option<i64> {
        let slot = self.slot(k, s);
        (slot.line != 0).then_some(slot.v[REPORTED])
    }

    /// The slot index a system's reported column feeds, for overrides.
    fn reported_slot(&self, s: usize) -> usize {
        match self.ctx.systems[s].measure {
            Measure::State(x) => x,
            Measure::Atp => AVAILABLE,
            Measure::Channel => REPORTED,
        }
    }

    /// System `s`'s value of `slot` at `k`, falling back upstream for a column its file lacks.
    fn state(&self, s: usize, k: u32, slot: usize, ov_sys: usize, ov: Overrides<'_>) -> i64 {
        if s == PHYS {
            return if slot == ON_HAND {
                self.entries[k as usize].baseline.unwrap_or(0)
            } else {
                0
            };
        }
        if s == ov_sys
            && let Some(p) = ov.iter().find(|p| p.key == k)
        {
            if slot == self.reported_slot(s) {
                return p.value;
            }
            if slot == COMMITTED
                && let Some(c) = p.committed
            {
                return c;
            }
        }
        let sl = self.slot(k, s);
        if sl.line == 0 {
            return 0;
        }
        if sl.mask & (1 << slot) != 0 {
            return sl.v[slot];
        }
        if slot == AVAILABLE {
            return self.atp(s, k, ov_sys, ov);
        }
        self.state(if s == 0 { PHYS } else { s - 1 }, k, slot, PHYS, &[])
    }

    fn atp(&self, s: usize, k: u32, ov_sys: usize, ov: Overrides<'_>) -> i64 {
        if s != PHYS {
            let sl = self.slot(k, s);
            if sl.line != 0 && sl.mask & (1 << AVAILABLE) != 0 {
                return self.state(s, k, AVAILABLE, ov_sys, ov);
            }
        }
        let st = |slot| self.state(s, k, slot, ov_sys, ov);
        st(ON_HAND)
            .saturating_sub(st(COMMITTED))
            .saturating_sub(st(RESERVED))
            .saturating_sub(st(UNAVAILABLE))
    }

    /// Calls `f` with each location key whose upstream ATP feeds channel system `s` at key `k`
    /// (the allocation-free form of [`Group::feeding`], for the per-key hot path).
    fn each_feeding(&self, s: usize, k: u32, mut f: impl FnMut(u32)) {
        let sys = &self.ctx.systems[s];
        let loc = self.loc(k);
        if !loc.is_empty() {
            if sys.all_locations || self.feeds(sys, loc) {
                f(k);
            }
            return;
        }
        for &kk in self.keys {
            let l = self.loc(kk);
            if !l.is_empty() && (sys.all_locations || self.feeds(sys, l)) {
                f(kk);
            }
        }
    }

    /// The location keys whose upstream ATP feeds channel system `s` at key `k`.
    pub(crate) fn feeding(&self, s: usize, k: u32) -> Vec<u32> {
        let sys = &self.ctx.systems[s];
        let loc = self.loc(k);
        if !loc.is_empty() {
            return if sys.all_locations || self.feeds(sys, loc) {
                vec![k]
            } else {
                vec![]
            };
        }
        self.keys
            .iter()
            .copied()
            .filter(|kk| {
                let l = self.loc(*kk);
                !l.is_empty() && (sys.all_locations || self.feeds(sys, l))
            })
            .collect()
    }

    pub(crate) fn upstream(&self, s: usize) -> usize {
        if s == 0 { PHYS } else { s - 1 }
    }

    pub(crate) fn channel_qty(&self, s: usize, atp_sum: i64) -> i64 {
        let spec = &self.ctx.systems[s].spec;
        if spec.rules.is_empty() {
            // No per-sku rule to match: any sku gives the same terms, so skip building one.
            return spec.quantity(&self.ctx.any_sku, atp_sum);
        }
        match Sku::parse(self.sku) {
            Ok(sku) => spec.quantity(&sku, atp_sum),
            Err(_) => 0,
        }
    }

    /// The value system `s` is expected to show at `k`, given its upstream (with `ov` replacing
    /// some of the upstream's reported values); `None` when it is not judged there.
    pub(crate) fn expected(&self, s: usize, k: u32, ov: Overrides<'_>) -> Option<i64> {
        let up = self.upstream(s);
        if up == PHYS && self.entries[k as usize].baseline.is_none() {
            return None;
        }
        let sys = &self.ctx.systems[s];
        match sys.measure {
            Measure::State(slot) => {
                if up == PHYS && slot != ON_HAND {
                    return None;
                }
                Some(self.state(up, k, slot, up, ov))
            }
            Measure::Atp => Some(self.atp(up, k, up, ov)),
            Measure::Channel => {
                if up != PHYS && self.ctx.systems[up].channel_like {
                    return Some(self.state(up, k, REPORTED, up, ov));
                }
                let mut sum = 0i64;
                self.each_feeding(s, k, |kk| {
                    sum = sum.saturating_add(self.atp(up, kk, up, ov));
                });
                Some(self.channel_qty(s, sum))
            }
        }
    }

    /// The upstream's committed quantity behind `s` at `k` (summed over a channel's locations).
    pub(crate) fn upstream_committed(&self, s: usize, k: u32) -> i64 {
        let up = self.upstream(s);
        if up == PHYS {
            return 0;
        }
        match self.ctx.systems[s].measure {
            Measure::Channel if !self.ctx.systems[up].channel_like => self
                .feeding(s, k)
                .into_iter()
                .map(|kk| self.state(up, kk, COMMITTED, PHYS, &[]))
                .sum(),
            _ => self.state(up, k, COMMITTED, PHYS, &[]),
        }
    }

    /// The channel quantity `s` would show if the upstream's committed stock were ignored.
    pub(crate) fn channel_without_committed(
        &self,
        s: usize,
        k: u32,
        ov: Overrides<'_>,
    ) -> Option<i64> {
        let up = self.upstream(s);
        if up == PHYS
            || self.ctx.systems[s].measure != Measure::Channel
            || self.ctx.systems[up].channel_like
        {
            return None;
        }
        let sum = self.feeding(s, k).into_iter().fold(0i64, |acc, kk| {
            // The committed quantity of the same moment as the ATP (the override's, if any).
            acc.saturating_add(
                self.atp(up, kk, up, ov)
                    .saturating_add(self.state(up, kk, COMMITTED, up, ov)),
            )
        });
        Some(self.channel_qty(s, sum))
    }

    /// Change-log entries of system `s` at the location of key `k`, up to the audit's moment,
    /// in the order they happened.
    pub(crate) fn log(&self, s: usize, k: u32) -> Vec<Change<'_>> {
        let loc = self.loc(k);
        let mut v: Vec<Change<'_>> = self
            .changes
            .iter()
            .filter(|c| c.system == s && c.loc == loc && c.at <= self.ctx.at_ms)
            .copied()
            .collect();
        v.sort_by_key(|c| (c.at, c.line));
        v
    }

    /// The writes of system `s`'s reported value at key `k`: its change log without the rows
    /// that moved only its committed quantity (same quantity as the row before, another
    /// `committed`). Those rows rebuild the system's availability as an upstream, but nobody
    /// wrote its value in them, so the rules that ask who wrote the value must not see them.
    pub(crate) fn writes(&self, s: usize, k: u32) -> Vec<Change<'_>> {
        let log = self.log(s, k);
        let mut out: Vec<Change<'_>> = Vec::with_capacity(log.len());
        for (i, c) in log.iter().enumerate() {
            let committed_only = i > 0
                && c.quantity == log[i - 1].quantity
                && c.committed.is_some()
                && c.committed != log[i - 1].committed;
            if !committed_only {
                out.push(*c);
            }
        }
        out
    }

    fn judge(&self, out: &mut PartResult) {
        let n = self.ctx.systems.len();
        for &k in self.keys {
            let mut compared = false;
            let mut hit: Option<(usize, i64, i64)> = None;
            for s in 0..n {
                if !self.judged(s, k) {
                    continue;
                }
                let Some(exp) = self.expected(s, k, &[]) else {
                    if s == 0 {
                        out.not_counted += 1;
                    }
                    continue;
                };
                compared = true;
                if self.slot(k, s).line == 0 {
                    out.absent[s] += 1;
                }
                let actual = self.shown(s, k).unwrap_or(0);
                let delta = actual.saturating_sub(exp);
                if hit.is_none() && delta != 0 && over(&self.threshold(k), delta, exp) {
                    hit = Some((s, actual, exp));
                }
            }
            if compared {
                out.compared += 1;
            }
            let Some((s, actual, exp)) = hit else {
                continue;
            };
            let cause = if s == 0 {
                Cause::CountVariance.into()
            } else {
                cause::probable(self, s, k, actual, exp)
            };
            let delta = actual - exp;
            out.handoffs[s].0 += 1;
            out.handoffs[s].1 += delta.unsigned_abs();
            let names = || self.ctx.systems.iter().map(|x| x.id.clone());
            out.rows.push(Row {
                sku: self.sku.to_owned(),
                location: String::from_utf8_lossy(self.loc(k)).into_owned(),
                baseline: self.entries[k as usize].baseline,
                values: Values(
                    names()
                        .enumerate()
                        .map(|(i, id)| (id, self.shown(i, k)))
                        .collect(),
                ),
                expected: Values(
                    names()
                        .enumerate()
                        .map(|(i, id)| {
                            (
                                id,
                                if self.judged(i, k) {
                                    self.expected(i, k, &[])
                                } else {
                                    None
                                },
                            )
                        })
                        .collect(),
                ),
                handoff: self.ctx.systems[s].handoff.clone(),
                cause: cause.main.as_str().to_owned(),
                also: cause.also.map(|c| c.as_str().to_owned()),
                delta,
            });
        }
    }
}

/// DESIGN §7: drift when `|delta| > units` **and** `|delta| > pct` percent of the expected value.
/// Compared in integers scaled by 10^6 so that `pct = 1.0` of 300 is exactly 3.
pub(crate) fn over(t: &Threshold, delta: i64, expected: i64) -> bool {
    let d = i128::from(delta).abs();
    if d <= i128::from(t.units) {
        return false;
    }
    let pct_ppm = (t.pct * 1_000_000.0).round() as i128;
    d * 100 * 1_000_000 > pct_ppm * i128::from(expected).abs()
}
