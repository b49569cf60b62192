//! Exact unit-of-measure conversion. Every quantity is kept in the base unit `EA`; a configured unit
//! is an exact positive integer number of base units for the skus its pattern matches.

use crate::glob::Glob;
use crate::id::{Sku, Unit};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown unit `{unit}` for sku `{sku}` (configure it under [[units]])")]
    Unknown { sku: String, unit: String },
    #[error("{qty} EA is not a whole number of `{unit}` ({factor} EA each)")]
    NotIntegral { qty: i64, unit: String, factor: u32 },
    #[error("quantity {qty} {unit} overflows when converted to EA")]
    Overflow { qty: i64, unit: String },
}

/// One configured conversion: `1 unit = factor EA` for skus matching `sku`.
#[derive(Debug, Clone)]
pub struct UnitRule {
    pub sku: Glob,
    pub unit: Unit,
    pub factor: u32,
}

/// All conversions; the first rule whose pattern and unit match wins.
#[derive(Debug, Clone, Default)]
pub struct UnitTable {
    rules: Vec<UnitRule>,
}

impl UnitTable {
    pub fn new(rules: Vec<UnitRule>) -> Self {
        UnitTable { rules }
    }

    pub fn rules(&self) -> &[UnitRule] {
        &self.rules
    }

    /// Base units per `unit` for `sku`.
    pub fn factor(&self, sku: &Sku, unit: &Unit) -> Result<u32, UnitError> {
        if unit.is_base() {
            return Ok(1);
        }
        self.rules
            .iter()
            .find(|r| &r.unit == unit && r.sku.matches(sku.as_str()))
            .map(|r| r.factor)
            .ok_or_else(|| UnitError::Unknown {
                sku: sku.to_string(),
                unit: unit.to_string(),
            })
    }

    /// `qty` in `unit` expressed in base units.
    pub fn to_base(&self, sku: &Sku, unit: &Unit, qty: i64) -> Result<i64, UnitError> {
        let f = self.factor(sku, unit)?;
        qty.checked_mul(i64::from(f))
            .ok_or_else(|| UnitError::Overflow {
                qty,
                unit: unit.to_string(),
            })
    }

    /// `qty` base units expressed in `unit`, only when that is a whole number.
    pub fn from_base(&self, sku: &Sku, unit: &Unit, qty: i64) -> Result<i64, UnitError> {
        let f = self.factor(sku, unit)?;
        if qty % i64::from(f) != 0 {
            return Err(UnitError::NotIntegral {
                qty,
                unit: unit.to_string(),
                factor: f,
            });
        }
        Ok(qty / i64::from(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> UnitTable {
        UnitTable::new(vec![
            UnitRule {
                sku: Glob::new("TEE-*").unwrap(),
                unit: Unit::parse("CS").unwrap(),
                factor: 12,
            },
            UnitRule {
                sku: Glob::new("*").unwrap(),
                unit: Unit::parse("CS").unwrap(),
                factor: 6,
            },
        ])
    }

    #[test]
    fn converts_exactly_first_rule_wins() {
        let t = table();
        let tee = Sku::parse("TEE-1").unwrap();
        let mug = Sku::parse("MUG-1").unwrap();
        let cs = Unit::parse("CS").unwrap();
        assert_eq!(t.to_base(&tee, &cs, 2), Ok(24));
        assert_eq!(t.to_base(&mug, &cs, -2), Ok(-12));
        assert_eq!(t.to_base(&tee, &Unit::base(), 7), Ok(7));
        assert_eq!(t.from_base(&tee, &cs, 36), Ok(3));
        assert!(matches!(
            t.from_base(&tee, &cs, 35),
            Err(UnitError::NotIntegral { .. })
        ));
        assert!(matches!(
            t.to_base(&tee, &Unit::parse("PAL").unwrap(), 1),
            Err(UnitError::Unknown { .. })
        ));
        assert!(matches!(
            t.to_base(&tee, &cs, i64::MAX / 2),
            Err(UnitError::Overflow { .. })
        ));
    }
}
