//! The webhook connector: a JSON POST per push, signed with HMAC-SHA256 under a key read from the
//! environment variable named by `secret_env`, carrying `Idempotency-Key` and `compare_quantity`.
//! The channel answers 2xx, 409 `{"current_quantity": n}`, 429/503 with `Retry-After`, or an error.

pub mod client;
pub mod transform;

pub use client::WebhookConnector;
