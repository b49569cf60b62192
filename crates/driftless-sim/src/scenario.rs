//! What a run simulates: the architecture, the size of the catalogue, the physical world's rates and
//! the six causes of drift, each switchable and tunable. Named scenarios are presets of these values;
//! `Params::set` tunes any of them by name (the CLI's `--set key=value`).

use crate::SimError;
use serde::Serialize;

/// How the systems are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// WMS daily file -> ERP import every few hours -> storefront polls the ERP.
    PointToPoint,
    /// Every system sends events to the driftless core; the storefront receives pushes.
    Hub,
}

impl Architecture {
    pub fn parse(s: &str) -> Result<Architecture, SimError> {
        match s {
            "point-to-point" | "p2p" => Ok(Architecture::PointToPoint),
            "hub" => Ok(Architecture::Hub),
            other => Err(SimError::Invalid(format!(
                "unknown architecture `{other}` (expected point-to-point or hub)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::PointToPoint => "point-to-point",
            Architecture::Hub => "hub",
        }
    }
}

/// The named scenarios, in the order `--help` lists them.
pub const SCENARIOS: [(&str, &str); 7] = [
    (
        "weekend-batch",
        "the WMS file runs on weekdays only; by Monday morning the ERP is a weekend behind",
    ),
    (
        "flash-sale-polling",
        "a flash sale on a few skus while the storefront polls the ERP every 15 minutes",
    ),
    (
        "uom-cases",
        "cased skus: the ERP import records a case of 12 as 1 unit",
    ),
    (
        "phantom",
        "the storefront sync maps on-hand but not committed: phantom availability",
    ),
    ("overrides", "people edit storefront quantities by hand"),
    (
        "retry-storm",
        "timed-out writes are retried after newer ones landed (out-of-sequence delivery)",
    ),
    ("everything", "all six causes at once"),
];

/// The integration faults of point-to-point. On the hub the same business runs, but these are the
/// integration's defects, so the hub is immune by construction (events, positions, units, ATP).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    /// Hour of day (UTC) the WMS writes its batch file.
    pub export_hour: u32,
    /// Hours between WMS files (24: daily). 0 switches the batch window off (a file every 5 min).
    pub export_every_h: u32,
    /// The WMS job does not run on Saturdays and Sundays.
    pub weekdays_only: bool,
    /// Minutes between ERP imports of waiting files.
    pub import_every_min: u32,
    /// Minutes between storefront polls of the ERP. 0 switches polling lag off (every minute).
    pub poll_every_min: u32,
    /// Minutes between order downloads from the storefront into the ERP.
    pub order_sync_min: u32,
    /// Share of the catalogue stored and sold in cases of 12.
    pub cased_share: f64,
    /// Share of cased skus whose ERP import ignores the unit (a case of 12 becomes 1 unit).
    pub uom_mismapped_share: f64,
    /// Share of skus whose storefront sync maps on-hand and not committed.
    pub phantom_share: f64,
    /// Hand edits of storefront quantities per day, across the catalogue.
    pub overrides_per_day: f64,
    /// Probability that one write (an ERP import of a file, a storefront update) times out after
    /// landing and is retried later, over newer data.
    pub retry_rate: f64,
    /// Longest delay before such a retry lands, in minutes.
    pub retry_max_delay_min: u32,
    /// The storefront lowers its own quantity when it takes an order (as Shopify does), between
    /// the integration's writes. Off: its quantity only changes when written (a storefront whose
    /// availability is managed entirely by the feed).
    pub shop_decrements: bool,
}

/// Everything one run depends on. Two runs with equal `Params` produce identical output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub scenario: String,
    pub architecture: Architecture,
    pub seed: u64,
    pub skus: usize,
    pub days: u32,
    /// Hours after the last midnight at which the snapshots are taken (9: Monday 09:00).
    pub snapshot_hour: u32,
    /// Customer orders per sku per day on average; velocity is Zipf-skewed across skus.
    pub orders_per_sku_day: f64,
    /// Zipf exponent of velocity (about 1: a few fast movers, a long slow tail).
    pub zipf: f64,
    /// Share of demand that arrives as B2B orders keyed into the ERP instead of the storefront.
    pub b2b_share: f64,
    /// Unrecorded losses (theft, damage, mis-picks) per sku and location per day, on average, for
    /// the fastest sku; slower skus lose proportionally less.
    pub shrink_per_day: f64,
    /// Share of (sku, location) cycle-counted each day.
    pub cycle_count_share: f64,
    /// Skus in a flash sale from noon on the last full day, or on the snapshot's day when the
    /// snapshot is after noon (0: none).
    pub flash_skus: usize,
    /// Demand multiplier during the flash sale.
    pub flash_multiplier: f64,
    /// Flash sale length in hours.
    pub flash_hours: u32,
    pub faults: Faults,
}

impl Params {
    /// A named scenario with the default size.
    pub fn scenario(name: &str, architecture: Architecture, seed: u64) -> Result<Params, SimError> {
        let mut p = Params {
            scenario: name.to_owned(),
            architecture,
            seed,
            skus: 200,
            days: 7,
            snapshot_hour: 9,
            orders_per_sku_day: 3.0,
            zipf: 1.0,
            b2b_share: 0.1,
            shrink_per_day: 0.3,
            cycle_count_share: 0.08,
            flash_skus: 0,
            flash_multiplier: 2.0,
            flash_hours: 3,
            faults: Faults {
                export_hour: 22,
                export_every_h: 24,
                weekdays_only: false,
                import_every_min: 240,
                poll_every_min: 15,
                order_sync_min: 15,
                cased_share: 0.1,
                uom_mismapped_share: 0.0,
                phantom_share: 0.0,
                overrides_per_day: 0.0,
                retry_rate: 0.0,
                retry_max_delay_min: 120,
                shop_decrements: true,
            },
        };
        let f = &mut p.faults;
        // Each named scenario shows its cause on its own: where the daily file is not the point,
        // the WMS writes a file every 5 minutes and the ERP imports every 5 minutes, so what drifts
        // is the cause named (plus the physical count variance every warehouse has).
        let fast_files = |f: &mut Faults| {
            f.export_every_h = 0;
            f.import_every_min = 5;
        };
        match name {
            "weekend-batch" => f.weekdays_only = true,
            "flash-sale-polling" => {
                fast_files(f);
                p.flash_skus = 5;
            }
            "uom-cases" => {
                fast_files(f);
                f.cased_share = 0.2;
                f.uom_mismapped_share = 1.0;
            }
            "phantom" => {
                fast_files(f);
                f.phantom_share = 1.0;
                // Phantom availability shows where other channels commit stock through the ERP;
                // the storefront's own sales it decrements itself.
                p.b2b_share = 0.4;
            }
            "overrides" => {
                fast_files(f);
                f.overrides_per_day = 12.0;
            }
            "retry-storm" => {
                // Hourly files and a queue that redelivers messages hours late.
                f.export_every_h = 1;
                f.import_every_min = 15;
                f.retry_rate = 0.3;
                f.retry_max_delay_min = 600;
            }
            "everything" => {
                f.weekdays_only = true;
                p.flash_skus = 5;
                f.cased_share = 0.2;
                f.uom_mismapped_share = 0.5;
                f.phantom_share = 0.3;
                f.overrides_per_day = 12.0;
                f.retry_rate = 0.15;
            }
            other => {
                let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
                return Err(SimError::Invalid(format!(
                    "unknown scenario `{other}` (expected one of {})",
                    names.join(", ")
                )));
            }
        }
        Ok(p)
    }

    /// Tunes one value by name, e.g. `poll_every_min=5` or `weekdays_only=false`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SimError> {
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, SimError> {
            v.trim()
                .parse()
                .map_err(|_| SimError::Invalid(format!("`{key}` needs a number, not `{v}`")))
        }
        fn share(key: &str, v: &str) -> Result<f64, SimError> {
            let x: f64 = num(key, v)?;
            if !(0.0..=1.0).contains(&x) {
                return Err(SimError::Invalid(format!(
                    "`{key}` is a share from 0 to 1, not `{v}`"
                )));
            }
            Ok(x)
        }
        fn rate(key: &str, v: &str, max: f64) -> Result<f64, SimError> {
            let x: f64 = num(key, v)?;
            if !(0.0..=max).contains(&x) {
                return Err(SimError::Invalid(format!(
                    "`{key}` must be between 0 and {max}, not `{v}`"
                )));
            }
            Ok(x)
        }
        fn minutes(key: &str, v: &str, max: u32) -> Result<u32, SimError> {
            let x: u32 = num(key, v)?;
            if x > max {
                return Err(SimError::Invalid(format!(
                    "`{key}` must be at most {max}, not `{v}`"
                )));
            }
            Ok(x)
        }
        fn boolean(key: &str, v: &str) -> Result<bool, SimError> {
            match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(SimError::Invalid(format!(
                    "`{key}` is true or false, not `{v}`"
                ))),
            }
        }
        let f = &mut self.faults;
        match key {
            "export_hour" => f.export_hour = minutes(key, value, 23)?,
            "export_every_h" => f.export_every_h = minutes(key, value, 168)?,
            "weekdays_only" => f.weekdays_only = boolean(key, value)?,
            "import_every_min" => f.import_every_min = minutes(key, value, 10_080)?.max(1),
            "poll_every_min" => f.poll_every_min = minutes(key, value, 1440)?,
            "order_sync_min" => f.order_sync_min = minutes(key, value, 1440)?.max(1),
            "cased_share" => f.cased_share = share(key, value)?,
            "uom_mismapped_share" => f.uom_mismapped_share = share(key, value)?,
            "phantom_share" => f.phantom_share = share(key, value)?,
            "overrides_per_day" => f.overrides_per_day = rate(key, value, 100_000.0)?,
            "retry_rate" => f.retry_rate = share(key, value)?,
            "retry_max_delay_min" => f.retry_max_delay_min = minutes(key, value, 1440)?.max(1),
            "shop_decrements" => f.shop_decrements = boolean(key, value)?,
            "orders_per_sku_day" => self.orders_per_sku_day = rate(key, value, 1000.0)?,
            "zipf" => self.zipf = rate(key, value, 3.0)?,
            "b2b_share" => self.b2b_share = share(key, value)?,
            "shrink_per_day" => self.shrink_per_day = rate(key, value, 100.0)?,
            "cycle_count_share" => self.cycle_count_share = share(key, value)?,
            "flash_skus" => self.flash_skus = num(key, value)?,
            "flash_multiplier" => self.flash_multiplier = rate(key, value, 1000.0)?,
            "flash_hours" => self.flash_hours = minutes(key, value, 24)?,
            "snapshot_hour" => self.snapshot_hour = minutes(key, value, 23)?,
            other => {
                return Err(SimError::Invalid(format!(
                    "unknown setting `{other}` (one of {})",
                    SETTINGS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Checks the size limits a run must respect.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(1..=100_000).contains(&self.skus) {
            return Err(SimError::Invalid(format!(
                "--skus must be from 1 to 100000, not {}",
                self.skus
            )));
        }
        if !(1..=120).contains(&self.days) {
            return Err(SimError::Invalid(format!(
                "--days must be from 1 to 120, not {}",
                self.days
            )));
        }
        // A budget on the size of one run: the hub keeps every event id it has seen.
        let sku_days = self.skus as u64 * u64::from(self.days);
        if sku_days > MAX_SKU_DAYS {
            return Err(SimError::Invalid(format!(
                "--skus {} for --days {} is {sku_days} sku-days; one run is limited to {MAX_SKU_DAYS} (for example 20000 skus for 10 days)",
                self.skus, self.days
            )));
        }
        Ok(())
    }
}

/// The largest `skus * days` of one run (about 1.6 GB on the hub).
pub const MAX_SKU_DAYS: u64 = 200_000;

/// Every name [`Params::set`] accepts.
pub const SETTINGS: [&str; 22] = [
    "shop_decrements",
    "export_hour",
    "export_every_h",
    "weekdays_only",
    "import_every_min",
    "poll_every_min",
    "order_sync_min",
    "cased_share",
    "uom_mismapped_share",
    "phantom_share",
    "overrides_per_day",
    "retry_rate",
    "retry_max_delay_min",
    "orders_per_sku_day",
    "zipf",
    "b2b_share",
    "shrink_per_day",
    "cycle_count_share",
    "flash_skus",
    "flash_multiplier",
    "flash_hours",
    "snapshot_hour",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_scenario_builds_and_unknown_is_refused() {
        for (name, _) in SCENARIOS {
            Params::scenario(name, Architecture::Hub, 1).unwrap();
        }
        assert!(Params::scenario("nope", Architecture::Hub, 1).is_err());
    }

    #[test]
    fn set_validates() {
        let mut p = Params::scenario("phantom", Architecture::PointToPoint, 1).unwrap();
        p.set("poll_every_min", "5").unwrap();
        assert_eq!(p.faults.poll_every_min, 5);
        assert!(p.set("phantom_share", "2").is_err());
        assert!(p.set("poll_every_min", "x").is_err());
        assert!(p.set("bogus", "1").is_err());
        p.set("weekdays_only", "true").unwrap();
        assert!(p.faults.weekdays_only);
    }
}
