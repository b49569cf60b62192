//! `[server]`: where the hub listens, where it keeps its data, who may call it, and the bounds on
//! each request.

use crate::checks::{Digests, check_auth_listen, either, positive, sha256_hex};
use crate::error::Locator;
use crate::raw::RawServer;
use crate::settings::MAX_TIMEOUT;
use crate::{
    AuthMode, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, Server, parse_duration,
};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The section, its tokens' digests added to `digests` (a digest may serve one holder only).
pub(crate) fn validate(loc: &mut Locator<'_>, rs: RawServer, digests: &mut Digests) -> Server {
    let auth = either(
        loc,
        rs.auth.as_ref(),
        "auth",
        [("tokens", AuthMode::Tokens), ("none", AuthMode::None)],
    );
    let read_tokens = tokens(
        loc,
        rs.read_token_sha256.as_deref(),
        "read_token_sha256",
        "a read token",
        digests,
    );
    let operator_tokens = tokens(
        loc,
        rs.operator_token_sha256.as_deref(),
        "operator_token_sha256",
        "an operator token",
        digests,
    );
    let server = Server {
        listen: rs
            .listen
            .map_or_else(|| "127.0.0.1:7400".to_owned(), |l| l.into_inner()),
        data_dir: PathBuf::from(rs.data_dir.unwrap_or_else(|| "./driftless-data".to_owned())),
        database_url: rs.database_url,
        nats_url: rs.nats_url,
        auth,
        read_tokens,
        operator_tokens,
        header_read_timeout: timeout(
            loc,
            rs.header_read_timeout.as_ref(),
            "header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        body_read_timeout: timeout(
            loc,
            rs.body_read_timeout.as_ref(),
            "body_read_timeout",
            DEFAULT_BODY_READ_TIMEOUT,
        ),
        max_body_bytes: limit(
            loc,
            rs.max_body_bytes.as_ref(),
            "max_body_bytes",
            16 * 1024 * 1024,
            256 * 1024 * 1024,
        ),
        max_batch: limit(loc, rs.max_batch.as_ref(), "max_batch", 10_000, 10_000),
        max_pending: limit(loc, rs.max_pending.as_ref(), "max_pending", 1024, 1_000_000),
    };
    if let Some(span) = rs.auth.as_ref().map(|a| a.span())
        && let Err(m) = check_auth_listen(&server)
    {
        loc.err(
            span,
            m,
            Some("set auth = \"tokens\" or listen on 127.0.0.1".into()),
        );
    }
    server
}

/// A list of token digests, each also added to `digests` as `who`'s.
fn tokens(
    loc: &mut Locator<'_>,
    list: Option<&[Spanned<String>]>,
    key: &str,
    who: &str,
    digests: &mut Digests,
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for t in list.into_iter().flatten() {
        if let Some(d) = sha256_hex(loc, t, key) {
            digests.push((d, t.span(), who.to_owned()));
            out.push(d);
        }
    }
    out
}

fn timeout(
    loc: &mut Locator<'_>,
    v: Option<&Spanned<String>>,
    what: &str,
    def: Duration,
) -> Duration {
    let Some(v) = v else { return def };
    match parse_duration(v.get_ref()).filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT) {
        Some(d) => d,
        None => {
            loc.err(
                v.span(),
                format!("{what} {:?} is not a duration from 1ms to 1h", v.get_ref()),
                Some(format!("e.g. {what} = \"{}s\"", def.as_secs())),
            );
            def
        }
    }
}

fn limit(
    loc: &mut Locator<'_>,
    v: Option<&Spanned<i64>>,
    what: &str,
    def: usize,
    max: i64,
) -> usize {
    v.and_then(|v| positive(loc, v, what, max))
        .map_or(def, |n| n as usize)
}
