//! The webhook connector's I/O: one signed POST per push, or per batch of pushes when the channel
//! opted in with `batch_size` > 1 (then every request has the batch shape, even of one push, so a
//! receiver sees one shape per configuration).

use super::transform;
use crate::{BoxFuture, ClientOptions, Connector, Push, PushOutcome};
use driftless_config::ChannelConfig;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

/// Most bytes of an answer the connector reads; a 409 body is a few dozen.
const MAX_ANSWER: usize = 16 * 1024;
/// More bytes allowed per push of a batch answer: a result with a long error message fits.
const MAX_ANSWER_PER_ITEM: usize = 512;

pub struct WebhookConnector {
    url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
    /// Send the batch shape.
    batches: bool,
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
            batches: false,
        })
    }

    /// Sends every request in the batch shape (the channel's `batch_size` is above 1).
    pub fn with_batches(mut self, on: bool) -> Self {
        self.batches = on;
        self
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
        Ok(Self::new(url, secret.into_bytes(), opts)?.with_batches(c.batch_size > 1))
    }

    /// One signed POST. `Ok((status, Retry-After, body))` once the channel answered with a
    /// status; a transport failure is the outcome of everything the body carried.
    async fn send(
        &self,
        body: Vec<u8>,
        key: &str,
        max_answer: usize,
    ) -> Result<(u16, Option<String>, Vec<u8>), PushOutcome> {
        let sig = transform::signature(&self.secret, &body);
        let sent = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(transform::IDEMPOTENCY_HEADER, key)
            .header(transform::SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(PushOutcome::Failed(crate::http::failure(&e))),
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
                Ok(Some(c)) if answer.len() < max_answer => answer.extend_from_slice(&c),
                Ok(Some(_)) | Ok(None) => break,
                // A 2xx whose body was cut is still a 2xx: the status line is the answer (for a
                // batch the cut body does not parse, and every push is in doubt).
                Err(e) if !(200..300).contains(&status) => {
                    return Err(PushOutcome::Failed(crate::http::failure(&e)));
                }
                Err(_) => break,
            }
        }
        Ok((status, retry_after, answer))
    }

    async fn send_batch(&self, pushes: &[Push]) -> Vec<PushOutcome> {
        let body = transform::batch_body(pushes);
        let key = transform::batch_key(pushes);
        let max = MAX_ANSWER + MAX_ANSWER_PER_ITEM * pushes.len();
        match self.send(body, &key, max).await {
            Ok((status, retry_after, answer)) => {
                transform::interpret_batch(pushes, status, retry_after.as_deref(), &answer)
            }
            Err(o) => vec![o; pushes.len()],
        }
    }
}

impl Connector for WebhookConnector {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn push<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, PushOutcome> {
        Box::pin(async move {
            if self.batches {
                let mut o = self.send_batch(std::slice::from_ref(push)).await;
                return o.pop().unwrap_or_else(|| {
                    PushOutcome::Failed(crate::Failure::retry("no answer for the push"))
                });
            }
            match self
                .send(transform::body(push), &push.idempotency_key, MAX_ANSWER)
                .await
            {
                Ok((status, retry_after, answer)) => {
                    transform::interpret(status, retry_after.as_deref(), &answer)
                }
                Err(o) => o,
            }
        })
    }

    fn push_batch<'a>(&'a self, pushes: &'a [Push]) -> BoxFuture<'a, Vec<PushOutcome>> {
        Box::pin(async move {
            if !self.batches {
                // The contract's single shape, one request per push.
                return crate::one_by_one(self, pushes).await;
            }
            if pushes.is_empty() {
                return Vec::new();
            }
            self.send_batch(pushes).await
        })
    }
}
