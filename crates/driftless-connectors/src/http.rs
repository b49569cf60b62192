//! The one HTTP client setup the connectors share: rustls with the ring provider (installed once,
//! nothing downloaded at build or run time), bounded timeouts and keep-alive, and `Retry-After`.

use crate::ClientOptions;
use std::sync::Once;
use std::time::Duration;

/// Longest wait a channel may ask for; beyond it the answer is treated as this long, so one
/// misconfigured channel cannot park a push for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

static PROVIDER: Once = Once::new();

/// Installs the ring TLS provider for every reqwest client of the process (once).
pub fn install_provider() {
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for one channel.
pub fn client(opts: &ClientOptions) -> Result<reqwest::Client, String> {
    install_provider();
    reqwest::Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(opts.connect_timeout)
        .pool_max_idle_per_host(opts.max_idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("driftless/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and falls back to `default`).
pub fn retry_after(value: Option<&str>, default: Duration) -> Duration {
    retry_after_secs(value.and_then(|v| v.trim().parse::<f64>().ok()), default)
}

/// A wait in seconds as a channel stated it (a header or a JSON number), bounded by
/// [`MAX_RETRY_AFTER`]; `default` when absent or nonsense.
pub fn retry_after_secs(secs: Option<f64>, default: Duration) -> Duration {
    secs.filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
        .unwrap_or(default)
}

/// A transport error as a failure: a connection never made cannot have been applied.
pub fn failure(e: &reqwest::Error) -> crate::Failure {
    if e.is_connect() {
        crate::Failure::not_sent(describe(e))
    } else {
        crate::Failure::retry(describe(e))
    }
}

/// A transport error in words an operator can act on.
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        // The connection dropped mid-request, the body could not be read, ...
        format!("transport error: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let d = Duration::from_secs(1);
        assert_eq!(retry_after(Some("3"), d), Duration::from_secs(3));
        assert_eq!(retry_after(Some(" 0.5 "), d), Duration::from_millis(500));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), d), d);
        assert_eq!(retry_after(Some("-4"), d), d);
        assert_eq!(retry_after(Some("99999999"), d), MAX_RETRY_AFTER);
        assert_eq!(retry_after(None, d), d);
    }
}
