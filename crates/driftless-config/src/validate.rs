//! Validation of the configuration as written into [`Settings`]: every section checked, every
//! problem recorded at its place in the file, cross-references between sections resolved.

use crate::checks::{
    DEMO_TOKEN_FIX, Digests, check_demo_tokens, glob, ident, known_system, parse_duration,
    positive, replay_bound, sha256_hex, uncovered_states, unique_digests,
};
use crate::error::Locator;
use crate::settings::{
    DEFAULT_MAX_FUTURE_SKEW, ItemSpec, LocationSpec, Role, Settings, SystemSpec,
};
use crate::{audit, checkpoints, epcis, raw};
use driftless_core::authority::Policy;
use driftless_core::units::UnitRule;
use driftless_core::{Authority, Location, Rules, Sku, SystemId, Unit, UnitTable};
use std::collections::{HashMap, HashSet};

pub(crate) fn validate(
    loc: &mut Locator<'_>,
    raw: raw::RawConfig,
    origin: &str,
) -> Option<Settings> {
    let rs = raw.server.unwrap_or_default();
    let listen_span = rs.listen.as_ref().map(|l| l.span());
    // Every token's digest, to refuse one given twice.
    let mut digests = Digests::new();
    let server = crate::server::validate(loc, rs, &mut digests);

    let mut systems = Vec::new();
    let mut ids = HashSet::new();
    for s in raw.systems.iter() {
        let Some(id) = ident(loc, &s.id, "system id", SystemId::parse) else {
            continue;
        };
        if !ids.insert(id.clone()) {
            loc.err(
                s.id.span(),
                format!("system `{id}` is declared twice"),
                None,
            );
        }
        let role = match Role::parse(s.role.get_ref()) {
            Some(r) => r,
            None => {
                loc.err(
                    s.role.span(),
                    format!("unknown role {:?}", s.role.get_ref()),
                    Some(format!("one of {}", Role::NAMES.join(", "))),
                );
                Role::Other
            }
        };
        let token_sha256 = s
            .token_sha256
            .as_ref()
            .and_then(|t| sha256_hex(loc, t, "token_sha256"));
        if let (Some(d), Some(t)) = (token_sha256, &s.token_sha256) {
            digests.push((d, t.span(), format!("system `{id}`")));
        }
        systems.push(SystemSpec {
            id,
            role,
            token_sha256,
        });
    }
    unique_digests(loc, digests);

    let mut authority = Authority::default();
    uncovered_states(loc, raw.authority.as_ref());
    if let Some(a) = raw.authority.as_ref().map(toml::Spanned::get_ref) {
        for (state, writers) in a.writers() {
            let list = writers
                .iter()
                .filter_map(|w| known_system(loc, w, &ids))
                .collect();
            authority.set_writers(state, list);
        }
        for (state, p) in a.policies() {
            match p.get_ref().as_str() {
                "reject" => authority.set_policy(state, Policy::Reject),
                "accept" => authority.set_policy(state, Policy::Accept),
                other => loc.err(
                    p.span(),
                    format!("policy for {state} must be \"reject\" or \"accept\", not {other:?}"),
                    None,
                ),
            }
        }
    }

    let mut unit_rules = Vec::new();
    for u in &raw.units {
        let sku = glob(loc, &u.sku);
        let unit = ident(loc, &u.unit, "unit", Unit::parse);
        if unit.as_ref().is_some_and(Unit::is_base) {
            loc.err(
                u.unit.span(),
                "EA is the base unit and always 1; it cannot be redefined",
                None,
            );
            continue;
        }
        let factor = positive(loc, &u.factor, "factor", 1_000_000);
        if let (Some(sku), Some(unit), Some(factor)) = (sku, unit, factor) {
            unit_rules.push(UnitRule { sku, unit, factor });
        }
    }

    let mut locations = Vec::new();
    for l in &raw.locations {
        if let Some(id) = ident(loc, &l.id, "location id", Location::parse) {
            locations.push(LocationSpec {
                id,
                sgln: l.sgln.clone(),
                shopify_location_id: l.shopify_location_id.clone(),
            });
        }
    }

    let mut channels = Vec::new();
    let mut channel_ids = HashSet::new();
    for c in &raw.channels {
        let Some(id) = ident(loc, &c.id, "channel id", SystemId::parse) else {
            continue;
        };
        if !channel_ids.insert(id.clone()) {
            loc.err(
                c.id.span(),
                format!("channel `{id}` is declared twice"),
                None,
            );
        }
        channels.push(crate::channels::validate(loc, c, id));
    }

    let mut items = Vec::new();
    for i in &raw.items {
        if let Some(sku) = ident(loc, &i.sku, "sku", Sku::parse) {
            items.push(ItemSpec {
                sku,
                gtin: i.gtin.clone(),
                shopify_inventory_item_id: i.shopify_inventory_item_id.clone(),
            });
        }
    }

    let hops = crate::hops::validate(loc, &raw.hops, &ids);

    let strict = raw.ledger.as_ref().is_some_and(|l| l.strict_skus);
    let max_future_skew = raw
        .ledger
        .as_ref()
        .and_then(|l| l.max_future_skew.as_ref())
        .map_or(Some(DEFAULT_MAX_FUTURE_SKEW), |v| {
            let d = parse_duration(v.get_ref());
            if d.is_none() {
                loc.err(
                    v.span(),
                    format!("max_future_skew {:?} is not a duration", v.get_ref()),
                    Some("e.g. \"30s\", \"5m\" (the default), \"1h\"".into()),
                );
            }
            d
        });
    let max_replay_events = raw
        .ledger
        .as_ref()
        .and_then(|l| l.max_replay_events.as_ref())
        .and_then(|v| replay_bound(loc, v));
    let checkpoint_settings = checkpoints::validate(loc, raw.checkpoints.as_ref());
    let rules = Rules {
        units: UnitTable::new(unit_rules),
        authority,
        systems: ids.clone(),
        known_skus: strict.then(|| items.iter().map(|i| i.sku.clone()).collect()),
        max_future_skew,
        checkpoints: checkpoint_settings.rules.clone(),
    };
    if let Some(span) = listen_span
        && let Err(m) = check_demo_tokens(&server, &systems)
    {
        loc.err(span, m, Some(DEMO_TOKEN_FIX.into()));
    }
    let system_roles: HashMap<SystemId, Role> =
        systems.iter().map(|s| (s.id.clone(), s.role)).collect();
    let audit = audit::validate(loc, raw.audit.as_ref(), &system_roles);
    let warnings = std::mem::take(&mut loc.warnings);
    let epcis_rules = epcis::validate(loc, raw.epcis.as_ref());

    Some(Settings {
        origin: origin.to_owned(),
        server,
        systems,
        rules,
        channels,
        items,
        locations,
        hops,
        audit,
        warnings,
        epcis_rules,
        checkpoints: checkpoint_settings,
        max_replay_events,
    })
}

#[cfg(test)]
mod tests {
    use crate::settings::{
        DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, EXAMPLE, Settings,
    };
    use std::time::Duration;

    #[test]
    fn errors_have_line_column_and_fix() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[[units]]\nsku = \"TEE-*\"\nunit = \"CS\"\nfactor = -12\n";
        let e = Settings::parse("f.toml", text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (7, 10), "{e}");
        assert!(e.0[0].message.contains("factor"), "{e}");

        let e = Settings::parse("f.toml", "[server]\nlisen = \"x\"\n").unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert!(e.0[0].message.contains("lisen"), "{e}");

        let e = Settings::parse(
            "f.toml",
            "[[systems]]\nid = \"wms\"\nrole = \"warehouse\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, 3);
        assert!(e.0[0].fix.as_deref().unwrap_or("").contains("wms"));

        let e = Settings::parse("f.toml", "[authority]\non_hand = [\"ghost\"]\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown system `ghost`"), "{e}");
    }

    #[test]
    fn a_hop_and_a_channel_list_every_error_in_order_with_its_line() {
        let text = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\n\
                    [[hops]]\nfrom = \"wms\"\nto = \"ghost\"\ntrigger = \"push\"\n\
                    schedule = \"fortnightly\"\nlatency_sla = \"soon\"\ndirection = \"both\"\n\n\
                    [[channels]]\nid = \"shop\"\nlocations = [\"DC1\"]\nconnector = \"webhook\"\n\
                    on_override = \"ignore\"\nmax_attempts = 0\n";
        let e = Settings::parse("f.toml", text).unwrap_err();
        let got: Vec<(usize, &str)> = e.0.iter().map(|x| (x.line, x.message.as_str())).collect();
        // Sections in the order they are checked (channels before hops), and within one the
        // order its keys are checked in.
        let want = [
            (17, "on_override must be \"overwrite\" or \"hold\""),
            (14, "uses the webhook connector but has no url"),
            (14, "uses the webhook connector but has no secret_env"),
            (18, "max_attempts"),
            (7, "unknown system `ghost`"),
            (8, "trigger must be event, poll or batch"),
            (9, "hop schedule \"fortnightly\" is not a schedule"),
            (10, "latency_sla \"soon\" is not a duration"),
            (11, "direction must be \"one-way\" or \"bidirectional\""),
        ];
        assert_eq!(got.len(), want.len(), "{e}");
        for ((line, message), (want_line, want_message)) in got.iter().zip(want) {
            assert_eq!(*line, want_line, "{message}");
            assert!(message.contains(want_message), "{message}");
        }
    }

    #[test]
    fn batch_size_is_checked_with_its_position() {
        let channel = |connector: &str, batch: &str| {
            format!(
                "[[channels]]\nid = \"shop\"\nlocations = [\"DC1\"]\nconnector = \"{connector}\"\n\
                 url = \"http://127.0.0.1:1/push\"\nsecret_env = \"S\"\n{batch}"
            )
        };
        let s = Settings::parse("f.toml", &channel("webhook", "")).unwrap();
        assert_eq!(
            s.channels[0].batch_size, 1,
            "one sku per request by default"
        );
        let s = Settings::parse("f.toml", &channel("webhook", "batch_size = 500\n")).unwrap();
        assert_eq!(s.channels[0].batch_size, 500);
        for bad in ["0", "501", "-3"] {
            let e = Settings::parse(
                "f.toml",
                &channel("webhook", &format!("batch_size = {bad}\n")),
            )
            .unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
            assert!(
                e.0[0].message.contains("batch_size") && e.0[0].message.contains("1 to 500"),
                "{e}"
            );
        }
        let e = Settings::parse("f.toml", &channel("none", "batch_size = 10\n")).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
        assert!(e.0[0].message.contains("webhook"), "{e}");
        assert!(Settings::parse("f.toml", &channel("none", "batch_size = 1\n")).is_ok());
        // A quoted number is a type error at the value (serde names the type, the position the key).
        let e =
            Settings::parse("f.toml", &channel("webhook", "batch_size = \"10\"\n")).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (7, 14), "{e}");
    }

    #[test]
    fn read_timeouts() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(s.server.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        let s = Settings::parse(
            "f.toml",
            "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(s.server.header_read_timeout, Duration::from_millis(500));
        assert_eq!(s.server.body_read_timeout, Duration::from_secs(2));
        for bad in ["\"0s\"", "\"2h\"", "\"soon\""] {
            let e = Settings::parse("f.toml", &format!("[server]\nbody_read_timeout = {bad}\n"))
                .unwrap_err();
            assert_eq!((e.0[0].line, e.0[0].column), (2, 21), "{e}");
        }
    }

    const WMS: &str = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\
        token_sha256 = \"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"\n";

    /// The one error of `text`, as `(line, column, message, fix)`.
    fn one_error(text: &str) -> (usize, usize, String, String) {
        let e = Settings::parse("f.toml", text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let e = &e.0[0];
        (
            e.line,
            e.column,
            e.message.clone(),
            e.fix.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn each_state_no_authority_list_covers_is_a_warning() {
        let s = Settings::parse(
            "f.toml",
            &format!("{WMS}\n[authority]\non_hand = [\"wms\"]\n"),
        )
        .unwrap();
        let states: Vec<&str> = s
            .warnings
            .iter()
            .map(|w| w.message.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(states, ["committed", "reserved", "incoming", "unavailable"]);
        assert!(
            s.warnings.iter().all(|w| (w.line, w.column) == (6, 1)),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings[0]
                .message
                .contains("every registered system may write it")
        );
        assert!(
            s.warnings[0]
                .fix
                .as_deref()
                .unwrap()
                .starts_with("committed = [")
        );
        // Without the section, all five, at the end of the file where it would go.
        let s = Settings::parse("f.toml", WMS).unwrap();
        assert_eq!(s.warnings.len(), 5);
        assert_eq!(s.warnings[0].line, 5);
        assert!(
            Settings::parse("example", EXAMPLE)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn a_token_digest_is_unique_across_systems_read_and_operator_tokens() {
        // A read token equal to the wms digest would have made every reader a writer.
        let text = format!(
            "[server]\nread_token_sha256 = [\"bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95\"]\n\
             operator_token_sha256 = [\"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"]\n\n{WMS}"
        );
        let (line, column, msg, fix) = one_error(&text);
        assert_eq!((line, column), (8, 16), "{msg}");
        assert!(
            msg.contains("already an operator token's (line 3)"),
            "{msg}"
        );
        assert!(
            fix.contains("system `wms`") && fix.contains("token-hash"),
            "{fix}"
        );
        let two = format!("{WMS}\n{}", WMS.replace("\"wms\"", "\"erp\""));
        let (line, _, msg, _) = one_error(&two);
        assert_eq!(line, 9, "{msg}");
        assert!(msg.contains("already system `wms`'s (line 4)"), "{msg}");
    }

    #[test]
    fn a_webhook_channel_needs_secret_env() {
        let text = "[[channels]]\nid = \"shop\"\nconnector = \"webhook\"\nurl = \"http://127.0.0.1:1/push\"\n";
        let (line, column, msg, fix) = one_error(text);
        assert_eq!((line, column), (2, 6));
        assert!(msg.contains("no secret_env"), "{msg}");
        assert!(
            fix.starts_with("secret_env = \"DRIFTLESS_SHOP_SECRET\""),
            "{fix}"
        );
        assert!(Settings::parse("f.toml", &format!("{text}secret_env = \"S\"\n")).is_ok());
    }

    #[test]
    fn an_allocation_finer_than_millionths_is_refused() {
        let channel = |a: &str| {
            format!(
                "[[channels]]\nid = \"shop\"\nallocation = {a}\n\n[[channels.rules]]\nsku = \"HOT-*\"\nallocation = 0.5\n"
            )
        };
        for ok in ["0.29", "0.123456", "1.0", "0.0", "1e-6"] {
            assert!(Settings::parse("f.toml", &channel(ok)).is_ok(), "{ok}");
        }
        let (line, column, msg, fix) = one_error(&channel("0.3333333"));
        assert_eq!((line, column), (3, 14));
        assert!(msg.contains("more than 6 decimal places"), "{msg}");
        assert_eq!(fix, "allocation = 0.333333 (at most 6 decimal places)");
        // A per-sku rule's allocation too.
        let rule = channel("0.5");
        let rule = rule.strip_suffix("allocation = 0.5\n").unwrap();
        let (line, _, _, _) = one_error(&format!("{rule}allocation = 0.12345678\n"));
        assert_eq!(line, 7);
    }

    #[test]
    fn a_hop_schedule_that_cannot_be_read_is_refused() {
        let hop = |schedule: &str| {
            format!(
                "{WMS}\n{}\n[[hops]]\nfrom = \"wms\"\nto = \"erp\"\ntrigger = \"batch\"\n\
                 schedule = \"{schedule}\"\nlatency_sla = \"4h\"\n",
                WMS.replace("\"wms\"", "\"erp\"").replace("79e1", "0000")
            )
        };
        for ok in ["every 24h", "4h", "hourly", "daily", "weekly", "every 90s"] {
            let s = Settings::parse("f.toml", &hop(ok)).unwrap();
            assert!(s.hops[0].every.is_some(), "{ok}");
        }
        for bad in ["nightly", "every day", "0s", "at 02:00"] {
            let (line, column, msg, fix) = one_error(&hop(bad));
            assert_eq!((line, column), (15, 12), "{bad}: {msg}");
            assert!(msg.contains("hop schedule"), "{msg}");
            assert!(fix.contains("\"every 15m\""), "{fix}");
        }
    }

    #[test]
    fn max_replay_events_is_optional_and_bounded_with_its_position() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.max_replay_events, None);
        let s = Settings::parse("f.toml", "[ledger]\nmax_replay_events = 100000\n").unwrap();
        assert_eq!(s.max_replay_events, Some(100_000));
        for bad in ["0", "9999", "100000001", "-5"] {
            let e = Settings::parse("f.toml", &format!("[ledger]\nmax_replay_events = {bad}\n"))
                .unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert!(e.0[0].message.contains("max_replay_events"), "{e}");
            assert!(e.0[0].message.contains(bad), "{e}");
            assert_eq!((e.0[0].line, e.0[0].column), (2, 21), "{e}");
        }
    }

    #[test]
    fn max_future_skew_defaults_and_is_checked_with_its_position() {
        let s = Settings::parse("f.toml", "").unwrap();
        assert_eq!(s.rules.max_future_skew, Some(Duration::from_secs(300)));
        let s = Settings::parse("f.toml", "[ledger]\nmax_future_skew = \"30s\"\n").unwrap();
        assert_eq!(s.rules.max_future_skew, Some(Duration::from_secs(30)));
        let e = Settings::parse("f.toml", "[ledger]\nmax_future_skew = \"soon\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (2, 19), "{e}");
        assert!(e.0[0].message.contains("max_future_skew"), "{e}");
        assert!(e.0[0].fix.is_some(), "{e}");
    }
}
