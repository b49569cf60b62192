//! Bearer tokens. Tokens are configured as SHA-256 digests and compared as digests, so the
//! configuration never holds a usable secret and the clear token is never logged.

use crate::error::ApiError;
use axum::http::HeaderMap;
use driftless_config::{AuthMode, Settings};
use driftless_core::SystemId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// May send events as this system, and read.
    System(SystemId),
    /// May only read.
    Reader,
    /// Authentication is off (loopback only): may do anything.
    Anyone,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    mode: AuthMode,
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    pub fn from_settings(s: &Settings) -> Tokens {
        let mut by_digest = HashMap::new();
        for t in &s.server.read_tokens {
            by_digest.insert(*t, Principal::Reader);
        }
        for sys in &s.systems {
            if let Some(d) = sys.token_sha256 {
                by_digest.insert(d, Principal::System(sys.id.clone()));
            }
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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}
