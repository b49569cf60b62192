//! Available-to-promise and the quantity a channel may sell.

use crate::glob::Glob;
use crate::id::{Location, Sku, SystemId};
use crate::state::State;

/// The five buckets of one sku at one location, in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    pub on_hand: i64,
    pub committed: i64,
    pub reserved: i64,
    pub incoming: i64,
    pub unavailable: i64,
}

impl Levels {
    pub fn get(&self, s: State) -> i64 {
        match s {
            State::OnHand => self.on_hand,
            State::Committed => self.committed,
            State::Reserved => self.reserved,
            State::Incoming => self.incoming,
            State::Unavailable => self.unavailable,
        }
    }

    pub fn set(&mut self, s: State, v: i64) {
        let slot = match s {
            State::OnHand => &mut self.on_hand,
            State::Committed => &mut self.committed,
            State::Reserved => &mut self.reserved,
            State::Incoming => &mut self.incoming,
            State::Unavailable => &mut self.unavailable,
        };
        *slot = v;
    }

    /// ATP: what can still be promised. Incoming is not promised: it has not arrived.
    pub fn available(&self) -> i64 {
        self.on_hand
            .saturating_sub(self.committed)
            .saturating_sub(self.reserved)
            .saturating_sub(self.unavailable)
    }
}

/// A share in parts per million. Allocation is configured as a decimal (0.0..=1.0) but computed as an
/// integer so that `floor(100 * 0.29)` is 29 and not 28 (binary floating point would say
/// 28.999999999999996).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);

    /// From a decimal share; `None` outside 0.0..=1.0.
    pub fn from_share(share: f64) -> Option<Ppm> {
        if !(0.0..=1.0).contains(&share) {
            return None;
        }
        Some(Ppm((share * 1_000_000.0).round() as u32))
    }
}

/// A per-sku override of a channel's defaults; fields left `None` keep the channel's value.
#[derive(Debug, Clone)]
pub struct ChannelRule {
    pub sku: Glob,
    pub safety_stock: Option<i64>,
    pub allocation: Option<Ppm>,
    pub pack: Option<u32>,
}

/// What the channel-quantity formula needs to know about one channel.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub id: SystemId,
    pub locations: Vec<Location>,
    pub safety_stock: i64,
    pub allocation: Ppm,
    pub pack: u32,
    /// First matching rule wins.
    pub rules: Vec<ChannelRule>,
}

impl ChannelSpec {
    /// The effective `(safety_stock, allocation, pack)` for `sku`.
    pub fn terms(&self, sku: &Sku) -> (i64, Ppm, u32) {
        let rule = self.rules.iter().find(|r| r.sku.matches(sku.as_str()));
        (
            rule.and_then(|r| r.safety_stock)
                .unwrap_or(self.safety_stock),
            rule.and_then(|r| r.allocation).unwrap_or(self.allocation),
            rule.and_then(|r| r.pack).unwrap_or(self.pack).max(1),
        )
    }

    pub fn feeds_from(&self, location: &Location) -> bool {
        self.locations.contains(location)
    }

    /// `max(0, floor((sum ATP - safety_stock) * allocation)) / pack` (floor), given the ATP summed
    /// over this channel's locations.
    pub fn quantity(&self, sku: &Sku, atp_sum: i64) -> i64 {
        let (safety, alloc, pack) = self.terms(sku);
        let net = i128::from(atp_sum) - i128::from(safety);
        if net <= 0 {
            return 0;
        }
        let allocated = net * i128::from(alloc.0) / 1_000_000;
        let packs = allocated / i128::from(pack);
        i64::try_from(packs).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChannelSpec {
        ChannelSpec {
            id: SystemId::parse("shop").unwrap(),
            locations: vec![Location::parse("DC1").unwrap()],
            safety_stock: 5,
            allocation: Ppm::from_share(0.29).unwrap(),
            pack: 1,
            rules: vec![ChannelRule {
                sku: Glob::new("CASE-*").unwrap(),
                safety_stock: Some(0),
                allocation: Some(Ppm::ONE),
                pack: Some(6),
            }],
        }
    }

    #[test]
    fn channel_quantity_formula() {
        let s = spec();
        let tee = Sku::parse("TEE").unwrap();
        assert_eq!(s.quantity(&tee, 105), 29); // (105-5) * 0.29 exactly, no float loss
        assert_eq!(s.quantity(&tee, 5), 0);
        assert_eq!(s.quantity(&tee, -40), 0);
        let case = Sku::parse("CASE-1").unwrap();
        assert_eq!(s.quantity(&case, 35), 5); // 35 / 6 floored
        assert_eq!(s.quantity(&case, 36), 6);
    }

    #[test]
    fn atp_excludes_incoming() {
        let l = Levels {
            on_hand: 847,
            committed: 30,
            reserved: 5,
            incoming: 100,
            unavailable: 2,
        };
        assert_eq!(l.available(), 810);
    }
}
