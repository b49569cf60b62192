//! The webhook connector's I/O: one signed POST per push.

use super::transform;
use crate::{BoxFuture, ClientOptions, Connector, Push, PushOutcome};
use driftless_config::ChannelConfig;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

/// Most bytes of an answer the connector reads; a 409 body is a few dozen.
const MAX_ANSWER: usize = 16 * 1024;

pub struct WebhookConnector {
    url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("WebhookConnector")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookConnector {
    pub fn new(url: String, secret: Vec<u8>, opts: &ClientOptions) -> Result<Self, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url `{url}` must start with http:// or https://"));
        }
        Ok(WebhookConnector {
            url,
            secret,
            http: crate::http::client(opts)?,
        })
    }

    pub fn from_config(
        c: &ChannelConfig,
        opts: &ClientOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let url = c.url.clone().ok_or("the webhook connector needs `url`")?;
        // Unsigned pushes would let anyone on the path forge quantities; require the key.
        let var = c.secret_env.as_deref().ok_or(
            "the webhook connector needs `secret_env` (the variable holding the HMAC key)",
        )?;
        let secret = env(var)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("environment variable `{var}` (secret_env) is not set"))?;
        Self::new(url, secret.into_bytes(), opts)
    }
}

impl Connector for WebhookConnector {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn push<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, PushOutcome> {
        Box::pin(async move {
            let body = transform::body(push);
            let sig = transform::signature(&self.secret, &body);
            let sent = self
                .http
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .header(transform::IDEMPOTENCY_HEADER, &push.idempotency_key)
                .header(transform::SIGNATURE_HEADER, sig)
                .body(body)
                .send()
                .await;
            let mut resp = match sent {
                Ok(r) => r,
                Err(e) => return PushOutcome::Failed(crate::http::failure(&e)),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut answer = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) if answer.len() < MAX_ANSWER => answer.extend_from_slice(&c),
                    Ok(Some(_)) | Ok(None) => break,
                    // A 2xx whose body was cut is still a 2xx: the status line is the answer.
                    Err(e) if !(200..300).contains(&status) => {
                        return PushOutcome::Failed(crate::http::failure(&e));
                    }
                    Err(_) => break,
                }
            }
            transform::interpret(status, retry_after.as_deref(), &answer)
        })
    }
}
