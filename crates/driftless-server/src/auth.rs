//! Bearer tokens. Tokens are configured as SHA-256 digests and compared as digests, so the
//! configuration never holds a usable secret and the clear token is never logged.
//!
//! [`require`] authenticates a request from its headers alone, before any handler runs, so a caller
//! without a valid token is refused before a byte of its body is read (and cannot make the hub
//! buffer megabytes to tell it so).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use driftless_config::{AuthMode, Settings};
use driftless_core::SystemId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// May send events as this system, report observations for its own channel, and read.
    System(SystemId),
    /// May only read.
    Reader,
    /// May change how the hub behaves (replay dead letters, hold and release skus), and read;
    /// sends no events: it is no system.
    Operator,
    /// Authentication is off (loopback only): may do anything.
    Anyone,
}

impl Principal {
    /// Refuses a principal that may not change the hub's behaviour.
    pub fn operator(&self) -> Result<(), ApiError> {
        match self {
            Principal::Operator | Principal::Anyone => Ok(()),
            Principal::Reader => Err(ApiError::Forbidden(
                "a read-only token cannot change anything".into(),
            )),
            Principal::System(me) => Err(ApiError::Forbidden(format!(
                "the token belongs to system `{me}`; replaying dead letters and holding or \
                 releasing a channel's skus needs an operator token ([server] operator_token_sha256)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    mode: AuthMode,
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    /// Every digest is unique across systems, read and operator tokens (`check-config` refuses a
    /// repeat); should one slip through, the weakest principal wins, never the strongest.
    pub fn from_settings(s: &Settings) -> Tokens {
        let mut by_digest = HashMap::new();
        for sys in &s.systems {
            if let Some(d) = sys.token_sha256 {
                by_digest.insert(d, Principal::System(sys.id.clone()));
            }
        }
        for t in &s.server.operator_tokens {
            by_digest.insert(*t, Principal::Operator);
        }
        for t in &s.server.read_tokens {
            by_digest.insert(*t, Principal::Reader);
        }
        Tokens {
            mode: s.server.auth,
            by_digest,
        }
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::Anyone);
        }
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// The token of a `Bearer` credential. The scheme is case-insensitive (RFC 9110, 11.1: `bearer`,
/// `BEARER` are the same scheme) and may be followed by more than one space.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: authenticates from the headers and hands the [`Principal`] to the handler as a
/// request extension, or answers 401 without reading the body.
pub async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    match st.tokens.authenticate(req.headers()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in [
            "Bearer t",
            "bearer t",
            "BEARER t",
            "bEaReR   t ",
            " Bearer t",
        ] {
            assert_eq!(bearer(v), Some("t"), "{v:?}");
        }
        for v in ["Basic t", "Bearer", "Bearer ", "Bearert", "t"] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }
}
