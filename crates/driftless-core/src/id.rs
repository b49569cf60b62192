//! Validated identifiers. An identifier that exists has passed validation: the rest of the code
//! never re-checks lengths or characters.

use smol_str::SmolStr;
use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes (got {len})")]
    TooLong { max: usize, len: usize },
    #[error("must not contain control characters")]
    Control,
    #[error("must not have leading or trailing white space")]
    Whitespace,
}

fn check(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { max, len: s.len() });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::Control);
    }
    // Leading/trailing spaces are the classic "TEE-1 " vs "TEE-1" split between two systems'
    // exports; refusing them at the door is cheaper than reconciling them later.
    if s.trim() != s {
        return Err(IdError::Whitespace);
    }
    Ok(())
}

macro_rules! ident {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        ///
        /// Kept inline when short (most ids are): the ledger's maps compare, hash and copy ids
        /// for nearly every event, and an inline id costs no allocation to copy and no pointer
        /// to follow to compare. Order and hash are those of the string.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(SmolStr);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `s`.
            pub fn parse(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                check(s, $max)?;
                Ok(Self(SmolStr::new(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

ident!(
    /// An item identifier (1..=128 bytes, no control characters).
    Sku,
    128
);
ident!(
    /// A stock location identifier (1..=128 bytes, no control characters).
    Location,
    128
);
ident!(
    /// A registered system's id (`wms`, `erp`, `shop`, ...).
    SystemId,
    64
);
ident!(
    /// An event's idempotency key, unique across the deployment. Longer than a sku because sources
    /// compose it from document numbers (`ship:SO-1001:line-3:pick-2`).
    EventId,
    256
);
ident!(
    /// A unit of measure code (`EA`, `CS`, `PK6`).
    Unit,
    16
);

impl Unit {
    /// The base unit every quantity is kept in.
    pub fn base() -> Unit {
        Unit(SmolStr::new_static("EA"))
    }

    pub fn is_base(&self) -> bool {
        self.0 == "EA"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_form() {
        assert_eq!(Sku::parse(""), Err(IdError::Empty));
        assert_eq!(
            Sku::parse("x".repeat(129)),
            Err(IdError::TooLong { max: 128, len: 129 })
        );
        assert_eq!(Sku::parse("A\u{0}B"), Err(IdError::Control));
        assert_eq!(Sku::parse("A\nB"), Err(IdError::Control));
        assert_eq!(Sku::parse(" TEE"), Err(IdError::Whitespace));
        assert!(Sku::parse("x".repeat(128)).is_ok());
        assert!(Sku::parse("TEE-BLK-M / ñ").is_ok());
        assert!(EventId::parse("e".repeat(256)).is_ok());
        assert!(EventId::parse("e".repeat(257)).is_err());
    }

    #[test]
    fn order_and_equality_are_the_strings_whether_kept_inline_or_not() {
        // Around the inline limit (23 bytes), and across it.
        let raw = [
            "b".repeat(23),
            "b".repeat(24),
            "a".repeat(40),
            "b".repeat(22),
            "c".to_owned(),
            "b".repeat(23) + "a",
        ];
        let mut ids: Vec<Sku> = raw.iter().map(|s| Sku::parse(s).unwrap()).collect();
        ids.sort();
        let mut strs = raw.to_vec();
        strs.sort();
        let back: Vec<&str> = ids.iter().map(Sku::as_str).collect();
        assert_eq!(back, strs);
        assert_eq!(Sku::parse("b".repeat(30)), Sku::parse("b".repeat(30)));
        assert_ne!(Sku::parse("b".repeat(30)), Sku::parse("b".repeat(31)));
        assert_eq!(Unit::parse("EA").unwrap(), Unit::base());
    }
}
