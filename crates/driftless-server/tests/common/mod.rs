//! What the server's integration tests share: the demo tokens and the configuration lines holding
//! their digests, a hub on 127.0.0.1 over the embedded SQLite store in a temporary directory, and
//! the requests most tests make of it.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::SqliteStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

pub const WMS: &str = "wms-demo-token";
pub const SHOP: &str = "shop-demo-token";
pub const READ: &str = "read-demo-token";
pub const OPERATOR: &str = "operator-demo-token";

/// The `[server]` line admitting [`READ`].
pub const READ_DIGEST: &str = r#"read_token_sha256 = ["bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95"] # read-demo-token"#;

/// The `[server]` line admitting [`OPERATOR`].
pub const OPERATOR_DIGEST: &str = r#"operator_token_sha256 = ["053fa11d794b3d944f1cd07a6cd7e574762682bb9e02bbbac8fb0690c6403e6e"] # operator-demo-token"#;

/// The warehouse, sending with [`WMS`].
pub const WMS_SYSTEM: &str = r#"
[[systems]]
id = "wms"
role = "wms"
token_sha256 = "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35" # wms-demo-token
"#;

/// The storefront, sending with [`SHOP`].
pub const SHOP_SYSTEM: &str = r#"
[[systems]]
id = "shop"
role = "storefront"
token_sha256 = "e3f27ff6c476961f3421e5872fdfad166cd4488c33d9431290043654624ecb15" # shop-demo-token
"#;

/// Tees also counted in cases of 12.
pub const TEE_CASES: &str = r#"
[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12
"#;

/// `[server]` admitting [`READ`] (with `server_extra`, more `[server]` lines), the wms, then
/// `rest`.
pub fn config_wms(server_extra: &str, rest: &str) -> String {
    format!("\n[server]\n{READ_DIGEST}\n{server_extra}\n{WMS_SYSTEM}{rest}")
}

/// As [`config_wms`], with the storefront after the wms.
pub fn config(server_extra: &str, rest: &str) -> String {
    config_wms(server_extra, &format!("{SHOP_SYSTEM}{rest}"))
}

/// The hub's state over a store opened in `dir`, and the store.
pub async fn open(config: &str, dir: &Path) -> (AppState, Arc<SqliteStore>) {
    let settings = Settings::parse("test.toml", config).unwrap();
    let store = Arc::new(
        SqliteStore::open(dir, settings.rules.clone(), settings.channel_specs())
            .await
            .unwrap(),
    );
    (AppState::new(settings, store.clone()), store)
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<SqliteStore>,
    /// The store's directory when the hub owns it.
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn(config: &str) -> TestApp {
    spawn_with(config, |_| {}).await
}

/// A hub on `config` (appended to nothing: the whole file), with `tweak` applied to its state
/// before it serves (a fixed clock, ...).
pub async fn spawn_with(config: &str, tweak: impl FnOnce(&mut AppState)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_in(config, dir.path(), tweak).await;
    app._dir = Some(dir);
    app
}

/// As [`spawn_with`], over a store in `dir`, which the caller keeps (a restart opens it again).
pub async fn spawn_in(config: &str, dir: &Path, tweak: impl FnOnce(&mut AppState)) -> TestApp {
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mut state, store) = open(config, dir).await;
    tweak(&mut state);
    let server = Server::bind("127.0.0.1:0", state).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        store,
        _dir: None,
        stop: Some(tx),
        task,
    }
}

impl TestApp {
    /// `POST /v1/events` with `body` as `content_type`.
    pub async fn post_events(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every ledger entry and incident, to prove a refused request stored nothing.
    pub async fn footprint(&self) -> (Value, Value) {
        let inv = self.get(READ, "/v1/inventory?limit=1000").await.1;
        let inc = self.get(READ, "/v1/incidents?limit=1000").await.1;
        (inv, inc)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// An event at DC1 with `change` (`set`, `adjust`, `uom`, ...) merged in.
pub fn ev(id: &str, source: &str, sku: &str, at: &str, change: Value) -> Value {
    let mut e =
        json!({"id": id, "source": source, "sku": sku, "location": "DC1", "occurred_at": at});
    for (k, v) in change.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// Each result's outcome, in order.
pub fn outcomes(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect()
}
