//! The small validators of single values in the file (digests, ids, patterns, shares, bounded
//! numbers, durations) and the checks that keep the published demo tokens and `auth = "none"` on
//! loopback.

use crate::error::Locator;
use crate::raw;
use crate::settings::{AuthMode, Server, SystemSpec};
use driftless_core::{Glob, Ppm, State, SystemId};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

/// The tokens of the shipped example configuration and the demo. They are published (in the
/// example file, the README and this source), so they protect nothing: accepted on loopback for
/// the tour, refused anywhere else.
pub const PUBLIC_DEMO_TOKENS: [(&str, &str); 5] = [
    (
        "wms-demo-token",
        "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35",
    ),
    (
        "erp-demo-token",
        "eabc55371eccdd5bf5ad14c1c026c941f7bac3d4a7be229489c728d6f296a95a",
    ),
    (
        "shop-demo-token",
        "e3f27ff6c476961f3421e5872fdfad166cd4488c33d9431290043654624ecb15",
    ),
    (
        "read-demo-token",
        "bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95",
    ),
    (
        "operator-demo-token",
        "053fa11d794b3d944f1cd07a6cd7e574762682bb9e02bbbac8fb0690c6403e6e",
    ),
];

/// The public demo token whose digest is `digest`, if it is one.
pub fn public_demo_token(digest: &[u8; 32]) -> Option<&'static str> {
    let hex = hex::encode(digest);
    PUBLIC_DEMO_TOKENS
        .iter()
        .find(|(_, d)| *d == hex)
        .map(|(t, _)| *t)
}

/// Whether `listen` (`host:port`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses the public demo tokens when the hub listens beyond loopback: anyone who has read the
/// README could send events as the WMS.
pub(crate) fn check_demo_tokens(server: &Server, systems: &[SystemSpec]) -> Result<(), String> {
    if server.auth == AuthMode::None || is_loopback(&server.listen) {
        return Ok(());
    }
    let digests = systems
        .iter()
        .filter_map(|s| s.token_sha256.map(|d| (format!("system `{}`", s.id), d)))
        .chain(
            server
                .read_tokens
                .iter()
                .map(|d| ("a read token".to_owned(), *d)),
        )
        .chain(
            server
                .operator_tokens
                .iter()
                .map(|d| ("an operator token".to_owned(), *d)),
        );
    let public: Vec<String> = digests
        .filter_map(|(who, d)| public_demo_token(&d).map(|t| format!("{who} ({t})")))
        .collect();
    if public.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the public demo tokens are refused on {} (they are published with the example \
         configuration; only a loopback address may use them): {}",
        server.listen,
        public.join(", ")
    ))
}

/// The fix for [`check_demo_tokens`].
pub(crate) const DEMO_TOKEN_FIX: &str = "make a secret token per system (e.g. `openssl rand -hex 32`), put \
    `driftless token-hash < token-file` in its place, or listen on 127.0.0.1";

pub(crate) fn check_auth_listen(s: &Server) -> Result<(), String> {
    if s.auth != AuthMode::None {
        return Ok(());
    }
    if is_loopback(&s.listen) {
        Ok(())
    } else {
        Err(format!(
            "auth = \"none\" is refused on {}: without tokens the API may only listen on a loopback address",
            s.listen
        ))
    }
}

/// Parses `"4h"`, `"30m"`, `"90s"`, `"2d"`, `"500ms"`, optionally prefixed by `every `.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let s = s.strip_prefix("every ").unwrap_or(s).trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "w" => n.checked_mul(604_800)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

pub(crate) fn sha256_hex(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<String>,
    what: &str,
) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    match hex::decode_to_slice(v.get_ref().trim(), &mut out) {
        Ok(()) => Some(out),
        Err(_) => {
            loc.err(
                v.span(),
                format!("{what} must be 64 hex digits (the SHA-256 of the token, not the token)"),
                Some("driftless token-hash <TOKEN> prints it".into()),
            );
            None
        }
    }
}

pub(crate) fn ident<T>(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<String>,
    what: &str,
    parse: impl Fn(String) -> Result<T, driftless_core::IdError>,
) -> Option<T> {
    match parse(v.get_ref().clone()) {
        Ok(x) => Some(x),
        Err(e) => {
            loc.err(v.span(), format!("{what} {e}"), None);
            None
        }
    }
}

pub(crate) fn glob(loc: &mut Locator<'_>, v: &toml::Spanned<String>) -> Option<Glob> {
    match Glob::new(v.get_ref().clone()) {
        Ok(g) => Some(g),
        Err(e) => {
            loc.err(v.span(), format!("sku pattern {e}"), None);
            None
        }
    }
}

pub(crate) fn share(loc: &mut Locator<'_>, v: &toml::Spanned<f64>) -> Option<Ppm> {
    let share = *v.get_ref();
    let p = Ppm::from_share(share);
    // The channel quantity computes with parts per million (`Ppm`): a seventh decimal would be
    // rounded away silently, and the operator would sell a different share than configured.
    // (1e-7 of a ppm is far above f64's error on a six-decimal value, far below a real seventh
    // decimal.)
    let ppm = share * 1_000_000.0;
    if p.is_some() && (ppm - ppm.round()).abs() > 1e-7 {
        loc.err(
            v.span(),
            format!(
                "allocation {share} has more than 6 decimal places; the channel quantity is \
                 computed in millionths, so it would be {}",
                ppm.round() / 1_000_000.0
            ),
            Some(format!(
                "allocation = {} (at most 6 decimal places)",
                ppm.round() / 1_000_000.0
            )),
        );
        return None;
    }
    if p.is_none() {
        loc.err(
            v.span(),
            format!(
                "allocation must be between 0.0 and 1.0 (got {})",
                v.get_ref()
            ),
            Some("allocation = 1.0 sells everything available".into()),
        );
    }
    p
}

/// One of two words, the first the default when the key is absent; an error naming both
/// otherwise (and the default stands).
pub(crate) fn either<T: Copy>(
    loc: &mut Locator<'_>,
    v: Option<&toml::Spanned<String>>,
    key: &str,
    [(first, a), (second, b)]: [(&str, T); 2],
) -> T {
    let Some(v) = v else { return a };
    match v.get_ref().as_str() {
        w if w == first => a,
        w if w == second => b,
        other => {
            loc.err(
                v.span(),
                format!("{key} must be \"{first}\" or \"{second}\", not {other:?}"),
                None,
            );
            a
        }
    }
}

pub(crate) fn positive(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<i64>,
    what: &str,
    max: i64,
) -> Option<u32> {
    whole_in(loc, v, what, 1..=max, None).and_then(|n| u32::try_from(n).ok())
}

/// A whole number within `range`, or an error at its position naming `what` and the range.
fn whole_in(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<i64>,
    what: &str,
    range: std::ops::RangeInclusive<i64>,
    fix: Option<String>,
) -> Option<i64> {
    let n = *v.get_ref();
    if !range.contains(&n) {
        loc.err(
            v.span(),
            format!(
                "{what} must be a whole number from {} to {} (got {n})",
                range.start(),
                range.end()
            ),
            fix,
        );
        return None;
    }
    Some(n)
}

/// `[ledger] max_replay_events`, within bounds that keep it meaningful: below 10,000 nearly every
/// group would write all it holds; above 10^8 a crash's replay would take tens of minutes.
pub(crate) fn replay_bound(loc: &mut Locator<'_>, v: &toml::Spanned<i64>) -> Option<i64> {
    whole_in(
        loc,
        v,
        "max_replay_events",
        10_000..=100_000_000,
        Some(
            "100000 for a restart after a crash in about a second; 1000000 (the default) for \
             the fastest ingest"
                .into(),
        ),
    )
}

pub(crate) fn non_negative(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<i64>,
    what: &str,
) -> Option<i64> {
    let n = *v.get_ref();
    if !(0..=driftless_core::MAX_QUANTITY).contains(&n) {
        loc.err(
            v.span(),
            format!(
                "{what} must be between 0 and {} (got {n})",
                driftless_core::MAX_QUANTITY
            ),
            None,
        );
        return None;
    }
    Some(n)
}

/// Token digests with where each stands in the file and whose it is.
pub(crate) type Digests = Vec<([u8; 32], Range<usize>, String)>;

/// Refuses a token digest given twice: the hub maps a digest to one principal, so a read token equal
/// to a system's digest would make that reader a writer (or the writer a reader).
pub(crate) fn unique_digests(loc: &mut Locator<'_>, mut digests: Digests) {
    digests.sort_by_key(|(_, span, _)| span.start);
    let mut first: HashMap<[u8; 32], (usize, String)> = HashMap::new();
    for (d, span, who) in digests {
        if let Some((line, earlier)) = first.get(&d) {
            let msg = format!(
                "this token digest is already {earlier}'s (line {line}); every digest must be \
                 unique across systems, read and operator tokens"
            );
            let fix = format!(
                "give {who} a token of its own and put `driftless token-hash < token-file` here"
            );
            loc.err(span, msg, Some(fix));
        } else {
            let (line, _) = loc.position(span.start);
            first.insert(d, (line, who));
        }
    }
}

/// Warns about each state no `[authority]` list covers: any registered system may write it
/// without an `override` (allowed, and what a one-system deployment wants, but rarely meant).
pub(crate) fn uncovered_states(
    loc: &mut Locator<'_>,
    a: Option<&toml::Spanned<raw::RawAuthority>>,
) {
    let listed: Vec<State> = a.map_or_else(Vec::new, |a| {
        a.get_ref().writers().into_iter().map(|(s, _)| s).collect()
    });
    // At the section when there is one, else at the end of the file, where it would go.
    let span = a.map_or(loc.text.len()..loc.text.len(), toml::Spanned::span);
    for state in State::ALL {
        if !listed.contains(&state) {
            loc.warn(
                span.clone(),
                format!(
                    "state `{state}` has no writer list under [authority]: every registered \
                     system may write it"
                ),
                Some(format!(
                    "{state} = [\"<system id>\", ...] under [authority] names its sources of truth"
                )),
            );
        }
    }
}

/// A system id that `[[systems]]` declares; an error otherwise.
pub(crate) fn known_system(
    loc: &mut Locator<'_>,
    v: &toml::Spanned<String>,
    ids: &HashSet<SystemId>,
) -> Option<SystemId> {
    let id = ident(loc, v, "system id", SystemId::parse)?;
    if !ids.contains(&id) {
        loc.err(
            v.span(),
            format!("unknown system `{id}`"),
            Some("declare it under [[systems]] first".into()),
        );
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("every 4h"),
            Some(Duration::from_secs(14_400))
        );
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("soon"), None);
    }
}
