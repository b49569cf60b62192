//! The audit report: the DESIGN §13 JSON shape, and nothing about how it was computed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The result of one audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the snapshots were taken.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub at: DateTime<Utc>,
    /// Keys compared: each (sku, location) of a location-level file and each sku of a channel-level one.
    pub skus_compared: u64,
    /// Rows over threshold.
    pub drifting: u64,
    /// Every hand-off of the chain, upstream first, including those without drift.
    pub handoffs: Vec<HandoffSummary>,
    /// Only what exceeds the threshold, ordered by sku then location.
    pub rows: Vec<Row>,
    /// Systems that had no row for keys they were judged on (counted as 0 there); omitted when
    /// every system listed every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<Absent>,
    /// Keys of the head system the baseline does not cover (a partial cycle count): not judged
    /// at `physical -> head`. Omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_counted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Keys a system was judged on but did not list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absent {
    pub system: String,
    pub keys: u64,
}

/// Drift that entered at one hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffSummary {
    /// `physical->wms`, `wms->erp`, ...
    pub handoff: String,
    pub drifting_skus: u64,
    /// Sum of `|delta|` over its rows, in base units.
    pub abs_units: u64,
}

/// One drifting sku at one location (empty location: channel level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub sku: String,
    /// Empty for a channel-level comparison (a storefront showing one quantity per sku).
    pub location: String,
    /// The physical count, when the baseline has this key.
    pub baseline: Option<i64>,
    /// Each chain system's value in base units; `null` when the system has no row for this key.
    pub values: Values,
    /// Each chain system's expected value from its actual upstream; `null` when not judged.
    pub expected: Values,
    pub handoff: String,
    pub cause: String,
    /// A second cause where two overlap on the key: `cause` has the larger share of the delta,
    /// this one a share that is itself over the threshold. Omitted when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<String>,
    /// The attributed system's value minus its expected value.
    pub delta: i64,
}

/// An ordered map `system -> value`, serialized as a JSON object in chain order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values(pub Vec<(String, Option<i64>)>);

impl Values {
    pub fn get(&self, system: &str) -> Option<i64> {
        self.0
            .iter()
            .find(|(s, _)| s == system)
            .and_then(|(_, v)| *v)
    }
}

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of system -> quantity")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Option<i64>>()? {
                    out.push((k, v));
                }
                Ok(Values(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}
