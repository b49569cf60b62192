//! Stand-in channels: small real HTTP/1.1 servers on 127.0.0.1 that behave like a webhook receiver
//! or Shopify's Admin GraphQL endpoint, for tests, the benchmark and demos. They check what the real
//! systems check (the signature, the request shapes Shopify documents, compare-and-set, idempotency
//! keys) and can inject faults: 5xx, 429, answers that arrive after the client gave up, and
//! connections dropped after or before applying.
//!
//! The webhook stand-in takes both the single shape and the batch shape (`docs/fanout.md`): the
//! signature covers the whole batch body, each item is compared and deduplicated by its own key,
//! and a fault hits the request as a whole, as a real receiver's crash or overload would; a batch
//! may also meet a sixth fault, some of its items answered 500 or 429 while the rest apply.
//!
//! The Shopify stand-in answers as Shopify does, HTTP 200 with top-level `errors`, for a request
//! that is wrong as such: `INVALID_VARIABLE` for variables its API version's schema does not take
//! (`compareQuantity`/`ignoreCompareQuantity` from 2026-04, a missing `changeFromQuantity` from
//! 2026-04, a quantity that is no 32-bit `Int`), `ACCESS_DENIED` without the `write_inventory`
//! scope; and user errors `COMPARE_QUANTITY_STALE` or `CHANGE_FROM_QUANTITY_STALE` (by the field
//! compared, and `compareQuantity` exists on 2026-01 only), `INVALID_QUANTITY_TOO_HIGH` above
//! 1,000,000,000 and `IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED` for a key whose request failed.
//!
//! HTTP is parsed by hand on purpose: a framework would not let a test drop a connection mid-request.

use crate::webhook::transform as wh;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// GraphQL bodies the Shopify stand-in keeps for tests.
pub const KEEP_GRAPHQL: usize = 256;

/// Which system the stand-in plays.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Verifies `X-Driftless-Signature` with this key.
    Webhook { secret: Vec<u8> },
    /// Checks the access token and the API version in the path.
    Shopify { token: String, api_version: String },
    /// Answers every request alike (`status`, extra header lines each ending in `\r\n`, `body`)
    /// and counts them: a receiver that always refuses the compare, or always throttles.
    Fixed {
        status: u16,
        headers: String,
        body: String,
    },
}

/// Injected faults; `rate` of requests fail, split evenly between the kinds.
#[derive(Debug, Clone)]
pub struct Faults {
    pub rate: f64,
    pub seed: u64,
    /// How long a stalled answer takes (longer than the client's timeout).
    pub stall: Duration,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            rate: 0.0,
            seed: 1,
            stall: Duration::ZERO,
        }
    }
}

/// One applied change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: String,
    pub sku: String,
    pub from: Option<i64>,
    pub to: i64,
}

/// Everything the stand-in saw; tests read it.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The channel's quantities (by sku; for Shopify by InventoryItem GID).
    pub quantities: HashMap<String, i64>,
    pub applied: Vec<Applied>,
    pub requests: u64,
    pub bad_signatures: u64,
    /// Requests whose shape differs from the documented one (Shopify mode).
    pub shape_errors: Vec<String>,
    pub conflicts: u64,
    pub faults: u64,
    /// A key seen again with a different body: what an idempotent API refuses.
    pub key_reuse_mismatch: u64,
    /// Requests being handled right now, and the most ever at once.
    pub active: u64,
    pub max_active: u64,
    /// Webhook batch requests, and the most pushes one carried.
    pub batches: u64,
    pub largest_batch: usize,
    /// A sku named twice in one batch: the hub never sends that (one push per sku in flight).
    pub batch_duplicate_skus: u64,
    /// Items of a batch answered with an injected per-item error (not applied).
    pub item_faults: u64,
    /// Shopify: the app lacks `write_inventory`; mutations answer `ACCESS_DENIED` (HTTP 200).
    pub missing_write_scope: bool,
    /// Shopify: keys whose earlier request failed (an injected 500 adds its key): a request with
    /// one answers `IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED`, as Shopify does.
    pub failed_keys: std::collections::HashSet<String>,
    /// Shopify: the first [`KEEP_GRAPHQL`] request bodies as sent, for checks against the schema.
    pub graphql: Vec<Value>,
    replies: HashMap<String, Reply>,
    bucket: f64,
    bucket_at: Option<Instant>,
}

type OnApply = Arc<dyn Fn(&str, i64) + Send + Sync>;

/// A running stand-in.
pub struct StandIn {
    pub addr: SocketAddr,
    pub ledger: Arc<Mutex<Ledger>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn").field("addr", &self.addr).finish()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    mode: Mode,
    faults: Faults,
    rng: Mutex<u64>,
    ledger: Arc<Mutex<Ledger>>,
    on_apply: Option<OnApply>,
}

impl StandIn {
    pub async fn start(mode: Mode, faults: Faults) -> std::io::Result<StandIn> {
        Self::start_with(mode, faults, None).await
    }

    /// `on_apply(sku, quantity)` runs when a push is applied (the benchmark's clock).
    pub async fn start_with(
        mode: Mode,
        faults: Faults,
        on_apply: Option<OnApply>,
    ) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ledger = Arc::new(Mutex::new(Ledger {
            bucket: 100.0,
            ..Ledger::default()
        }));
        let shared = Arc::new(Shared {
            mode,
            rng: Mutex::new(faults.seed.max(1)),
            faults,
            ledger: ledger.clone(),
            on_apply,
        });
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(sock, shared.clone()));
            }
        });
        Ok(StandIn { addr, ledger, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets a quantity behind the hub's back (a person editing the storefront).
    pub fn set(&self, key: &str, quantity: i64) {
        self.lock().quantities.insert(key.to_owned(), quantity);
    }

    pub fn get(&self, key: &str) -> Option<i64> {
        self.lock().quantities.get(key).copied()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ServerError,
    TooMany,
    Stall,
    DropAfterApply,
    DropBeforeApply,
    /// Batches only: some items answered 500 or 429 (not applied), the others applied.
    ItemErrors,
}

/// A status, extra header lines and a body.
type Reply = (u16, String, String);

/// What a request changes, applied at once or, for a fault, before stalling or dropping.
#[derive(Default)]
struct Effects {
    applied: Vec<(Applied, Reply)>,
    /// Answers remembered under their keys without a change (compare failures).
    remembered: Vec<(String, Reply)>,
}

impl Shared {
    /// xorshift64: deterministic given the seed.
    fn next(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fault for this request or none; `batch` adds per-item errors to the kinds.
    fn roll(&self, batch: bool) -> Option<Fault> {
        if self.faults.rate <= 0.0 || self.next() >= self.faults.rate {
            return None;
        }
        let kinds = if batch { 6.0 } else { 5.0 };
        Some(match (self.next() * kinds) as u32 {
            0 => Fault::ServerError,
            1 => Fault::TooMany,
            2 => Fault::Stall,
            3 => Fault::DropAfterApply,
            4 => Fault::DropBeforeApply,
            _ => Fault::ItemErrors,
        })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    let start = head_end + 4;
    while buf.len() < start + len {
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Some(Request {
        path,
        headers,
        body,
    })
}

async fn respond(sock: &mut TcpStream, status: u16, extra: &str, body: &str) -> bool {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    sock.write_all(msg.as_bytes()).await.is_ok()
}

/// What to do with a request once it is understood.
enum Action {
    Reply(u16, String, String),
    /// Apply (maybe) and then stall or drop, per the fault.
    Fault(Fault, Effects, Reply),
}

/// Counts a request as active for as long as it lives, whichever way it ends.
struct Active(Arc<Mutex<Ledger>>);

impl Active {
    fn new(l: &Arc<Mutex<Ledger>>) -> Active {
        let mut g = l.lock().unwrap_or_else(|p| p.into_inner());
        g.active += 1;
        g.max_active = g.max_active.max(g.active);
        Active(l.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.active = g.active.saturating_sub(1);
    }
}

async fn serve(mut sock: TcpStream, sh: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let _active = Active::new(&sh.ledger);
        let action = match &sh.mode {
            Mode::Webhook { secret } => webhook(&sh, secret, &req),
            Mode::Shopify { token, api_version } => shopify(&sh, token, api_version, &req),
            Mode::Fixed {
                status,
                headers,
                body,
            } => {
                sh.ledger().requests += 1;
                Action::Reply(*status, headers.clone(), body.clone())
            }
        };
        match action {
            Action::Reply(s, extra, body) => {
                if !respond(&mut sock, s, &extra, &body).await {
                    return;
                }
            }
            Action::Fault(f, effects, (s, extra, body)) => {
                sh.ledger().faults += 1;
                match f {
                    Fault::ServerError => {
                        if matches!(sh.mode, Mode::Shopify { .. }) {
                            let mut l = sh.ledger();
                            for (a, _) in &effects.applied {
                                l.failed_keys.insert(a.key.clone());
                            }
                        }
                        let _ = respond(&mut sock, 500, "", "{\"error\":\"injected\"}").await;
                    }
                    Fault::TooMany => {
                        let _ = respond(&mut sock, 429, "retry-after: 0\r\n", "{}").await;
                    }
                    Fault::DropBeforeApply => return,
                    // Decided (and committed) by the batch handler, which answers normally.
                    Fault::ItemErrors => {
                        if !respond(&mut sock, s, &extra, &body).await {
                            return;
                        }
                    }
                    Fault::DropAfterApply | Fault::Stall => {
                        commit(&sh, effects);
                        if f == Fault::Stall {
                            tokio::time::sleep(sh.faults.stall).await;
                            let _ = respond(&mut sock, s, &extra, &body).await;
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Applies changes and remembers the answers under their keys.
fn commit(sh: &Shared, e: Effects) {
    let mut l = sh.ledger();
    let done = commit_locked(&mut l, e);
    drop(l);
    if let Some(f) = &sh.on_apply {
        for (sku, to) in done {
            f(&sku, to);
        }
    }
}

/// [`commit`] under a lock the caller holds; returns `(sku, quantity)` per applied change for the
/// `on_apply` hook, which runs after the lock is released.
fn commit_locked(l: &mut Ledger, e: Effects) -> Vec<(String, i64)> {
    for (k, r) in e.remembered {
        l.replies.insert(k, r);
    }
    let mut done = Vec::with_capacity(e.applied.len());
    for (a, reply) in e.applied {
        l.quantities.insert(a.sku.clone(), a.to);
        l.replies.insert(a.key.clone(), reply);
        done.push((a.sku.clone(), a.to));
        l.applied.push(a);
    }
    done
}

fn one(a: Applied, reply: Reply) -> Effects {
    Effects {
        applied: vec![(a, reply)],
        remembered: Vec::new(),
    }
}

fn webhook(sh: &Shared, secret: &[u8], req: &Request) -> Action {
    let mut l = sh.ledger();
    l.requests += 1;
    let sig = req
        .headers
        .get("x-driftless-signature")
        .map(String::as_str)
        .unwrap_or("");
    if !wh::verify(secret, &req.body, sig) {
        l.bad_signatures += 1;
        return Action::Reply(401, String::new(), "{\"error\":\"bad signature\"}".into());
    }
    let b = match serde_json::from_slice::<wh::PushBody>(&req.body) {
        Ok(b) => b,
        Err(_) => match serde_json::from_slice::<wh::BatchBody>(&req.body) {
            Ok(batch) => return webhook_batch(sh, l, req, batch),
            Err(_) => {
                return Action::Reply(400, String::new(), "{\"error\":\"bad body\"}".into());
            }
        },
    };
    if req.headers.get("idempotency-key") != Some(&b.idempotency_key) {
        return Action::Reply(400, String::new(), "{\"error\":\"key mismatch\"}".into());
    }
    if let Some((s, e, body)) = l.replies.get(&b.idempotency_key).cloned() {
        return Action::Reply(s, e, body);
    }
    let fault = sh.roll(false);
    let current = l.quantities.get(&b.sku).copied();
    // `null` means "first push": nothing to compare against.
    if b.compare_quantity.is_some() && b.compare_quantity != current {
        l.conflicts += 1;
        let body = json!({"current_quantity": current}).to_string();
        l.replies.insert(
            b.idempotency_key.clone(),
            (409, String::new(), body.clone()),
        );
        return Action::Reply(409, String::new(), body);
    }
    let applied = Applied {
        key: b.idempotency_key.clone(),
        sku: b.sku.clone(),
        from: current,
        to: b.quantity,
    };
    let ok = (200, String::new(), "{\"ok\":true}".to_owned());
    drop(l);
    match fault {
        None => {
            commit(sh, one(applied, ok.clone()));
            Action::Reply(ok.0, ok.1, ok.2)
        }
        Some(f) => Action::Fault(f, one(applied, ok.clone()), ok),
    }
}

/// A batch: the key must be the one derived from the items, each item is answered from its key if
/// seen before, else compared and applied in order, exactly as a single push would be.
fn webhook_batch(
    sh: &Shared,
    mut l: std::sync::MutexGuard<'_, Ledger>,
    req: &Request,
    b: wh::BatchBody,
) -> Action {
    l.batches += 1;
    l.largest_batch = l.largest_batch.max(b.pushes.len());
    if b.pushes.is_empty() || b.pushes.len() > 500 {
        return Action::Reply(413, String::new(), "{\"error\":\"1 to 500 pushes\"}".into());
    }
    let key = wh::batch_key_of(b.pushes.iter().map(|p| p.idempotency_key.as_str()));
    if req.headers.get("idempotency-key") != Some(&key) {
        return Action::Reply(400, String::new(), "{\"error\":\"key mismatch\"}".into());
    }
    let fault = sh.roll(true);
    let mut effects = Effects::default();
    let mut results = Vec::with_capacity(b.pushes.len());
    // What the items before this one did, so that compares run in order.
    let mut overlay: HashMap<&str, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for p in &b.pushes {
        if !seen.insert(p.sku.as_str()) {
            l.batch_duplicate_skus += 1;
        }
        let result = |status: u16| wh::ItemResult {
            idempotency_key: p.idempotency_key.clone(),
            status,
            current_quantity: None,
            changed_by: None,
            retry_after: None,
            error: None,
        };
        if let Some((status, _, body)) = l.replies.get(&p.idempotency_key) {
            let current = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["current_quantity"].as_i64());
            results.push(wh::ItemResult {
                current_quantity: current,
                ..result(*status)
            });
            continue;
        }
        if fault == Some(Fault::ItemErrors) && sh.next() < 0.5 {
            l.item_faults += 1;
            results.push(if sh.next() < 0.5 {
                wh::ItemResult {
                    error: Some("injected".into()),
                    ..result(500)
                }
            } else {
                wh::ItemResult {
                    retry_after: Some(0.0),
                    ..result(429)
                }
            });
            continue;
        }
        let current = overlay
            .get(p.sku.as_str())
            .copied()
            .or_else(|| l.quantities.get(&p.sku).copied());
        if p.compare_quantity.is_some() && p.compare_quantity != current {
            l.conflicts += 1;
            let body = json!({"current_quantity": current}).to_string();
            effects
                .remembered
                .push((p.idempotency_key.clone(), (409, String::new(), body)));
            results.push(wh::ItemResult {
                current_quantity: current,
                ..result(409)
            });
            continue;
        }
        overlay.insert(&p.sku, p.quantity);
        effects.applied.push((
            Applied {
                key: p.idempotency_key.clone(),
                sku: p.sku.clone(),
                from: current,
                to: p.quantity,
            },
            (200, String::new(), "{\"ok\":true}".to_owned()),
        ));
        results.push(result(200));
    }
    let body = serde_json::to_string(&wh::BatchAnswer { results }).unwrap_or_default();
    let ok = (200, String::new(), body);
    match fault {
        None | Some(Fault::ItemErrors) => {
            let done = commit_locked(&mut l, effects);
            drop(l);
            if let Some(f) = &sh.on_apply {
                for (sku, to) in done {
                    f(&sku, to);
                }
            }
            match fault {
                None => Action::Reply(ok.0, ok.1, ok.2),
                Some(f) => Action::Fault(f, Effects::default(), ok),
            }
        }
        Some(f) => Action::Fault(f, effects, ok),
    }
}

fn shape_error(l: &mut Ledger, msg: String) -> Action {
    l.shape_errors.push(msg.clone());
    Action::Reply(
        200,
        String::new(),
        json!({"errors": [{"message": msg}]}).to_string(),
    )
}

/// HTTP 200 with a top-level error, as Shopify answers a request that is wrong as such.
fn top_level(code: &str, message: &str) -> Action {
    Action::Reply(
        200,
        String::new(),
        json!({"errors": [{"message": message, "extensions": {"code": code}}]}).to_string(),
    )
}

/// What the version's schema refuses in the variables (Shopify checks them before running
/// anything): fields it does not have, a quantity that is no 32-bit `Int`, and from 2026-04 a
/// `changeFromQuantity` left out.
fn variable_problems(version: &str, input: &Value) -> Vec<String> {
    let removed = version >= "2026-04";
    let mut out = Vec::new();
    let bad = |path: &str, why: &str| {
        format!(
            "Variable $input of type InventorySetQuantitiesInput! was provided invalid value for \
             {path} ({why})"
        )
    };
    if removed && input.get("ignoreCompareQuantity").is_some() {
        out.push(bad(
            "ignoreCompareQuantity",
            "Field is not defined on InventorySetQuantitiesInput",
        ));
    }
    for (i, q) in input["quantities"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if removed && q.get("compareQuantity").is_some() {
            out.push(bad(
                &format!("quantities.{i}.compareQuantity"),
                "Field is not defined on InventoryQuantityInput",
            ));
        }
        if removed && q.get("changeFromQuantity").is_none() {
            out.push(bad(
                &format!("quantities.{i}.changeFromQuantity"),
                "Expected value to not be null: changeFromQuantity must be given, null to skip the check",
            ));
        }
        for f in ["quantity", "changeFromQuantity", "compareQuantity"] {
            let v = &q[f];
            if !v.is_null() && v.as_i64().and_then(|n| i32::try_from(n).ok()).is_none() {
                out.push(bad(
                    &format!("quantities.{i}.{f}"),
                    "Could not coerce value to Int: Int cannot represent non 32-bit signed integer value",
                ));
            }
        }
    }
    out
}

fn is_gid(v: &Value, kind: &str) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix("gid://shopify/")
            .and_then(|r| r.strip_prefix(kind))
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn shopify(sh: &Shared, token: &str, version: &str, req: &Request) -> Action {
    let mut l = sh.ledger();
    l.requests += 1;
    if req.path != format!("/admin/api/{version}/graphql.json") {
        return Action::Reply(404, String::new(), "{\"errors\":\"Not Found\"}".into());
    }
    if req
        .headers
        .get("x-shopify-access-token")
        .map(String::as_str)
        != Some(token)
    {
        return Action::Reply(
            401,
            String::new(),
            "{\"errors\":\"[API] Invalid API key or access token\"}".into(),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return shape_error(&mut l, "body is not JSON".into());
    };
    if l.graphql.len() < KEEP_GRAPHQL {
        l.graphql.push(v.clone());
    }
    let query = v["query"].as_str().unwrap_or("");
    // The cost bucket: 100 points, 50 per second, 10 per call.
    let now = Instant::now();
    let el = l
        .bucket_at
        .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    l.bucket = (l.bucket + el * 50.0).min(100.0);
    l.bucket_at = Some(now);
    let cost = |avail: f64| {
        json!({"cost": {"requestedQueryCost": 10, "actualQueryCost": 10,
            "throttleStatus": {"maximumAvailable": 100.0, "currentlyAvailable": avail, "restoreRate": 50.0}}})
    };
    if l.bucket < 10.0 {
        let avail = l.bucket;
        return Action::Reply(
            200,
            String::new(),
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                "extensions": cost(avail)})
            .to_string(),
        );
    }
    l.bucket -= 10.0;
    let avail = l.bucket;
    if query.contains("inventoryItem(") {
        let item = &v["variables"]["item"];
        if !is_gid(item, "InventoryItem") || !is_gid(&v["variables"]["location"], "Location") {
            return shape_error(&mut l, format!("read-back ids must be GID strings: {v}"));
        }
        let q = l.quantities.get(item.as_str().unwrap_or("")).copied();
        let level = q.map(|q| json!({"quantities": [{"name": "available", "quantity": q}]}));
        return Action::Reply(
            200,
            String::new(),
            json!({"data": {"inventoryItem": {"inventoryLevel": level}}, "extensions": cost(avail)})
                .to_string(),
        );
    }
    if !query.contains("inventorySetQuantities(input: $input)")
        || !query.contains("@idempotent(key: $idempotencyKey)")
    {
        return shape_error(
            &mut l,
            format!("not an idempotent inventorySetQuantities: {query}"),
        );
    }
    let Some(key) = v["variables"]["idempotencyKey"].as_str().map(str::to_owned) else {
        return shape_error(&mut l, "idempotencyKey variable missing".into());
    };
    let input = &v["variables"]["input"];
    let q = &input["quantities"];
    let problems: Vec<&str> = [
        (
            input["name"] != "available",
            "input.name must be \"available\"",
        ),
        (
            input["reason"].as_str().is_none_or(str::is_empty),
            "input.reason is required",
        ),
        (
            q.as_array().is_none_or(|a| a.len() != 1),
            "one quantity per call",
        ),
        (
            !is_gid(&q[0]["inventoryItemId"], "InventoryItem"),
            "inventoryItemId must be an InventoryItem GID string",
        ),
        (
            !is_gid(&q[0]["locationId"], "Location"),
            "locationId must be a Location GID string",
        ),
    ]
    .into_iter()
    .filter(|(bad, _)| *bad)
    .map(|(_, m)| m)
    .collect();
    if !problems.is_empty() {
        return shape_error(&mut l, problems.join("; "));
    }
    let invalid = variable_problems(version, input);
    if !invalid.is_empty() {
        l.shape_errors.extend(invalid.iter().cloned());
        return top_level("INVALID_VARIABLE", &invalid.join("; "));
    }
    if l.missing_write_scope {
        return top_level(
            "ACCESS_DENIED",
            "Access denied for inventorySetQuantities field. Required access: `write_inventory` \
             access scope.",
        );
    }
    let user_error = |code: &str, field: Value, message: &str| {
        json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": null,
            "userErrors": [{"code": code, "field": field, "message": message}]}},
            "extensions": cost(avail)})
        .to_string()
    };
    if l.failed_keys.contains(&key) {
        return Action::Reply(
            200,
            String::new(),
            user_error(
                "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
                Value::Null,
                "A previous request with this idempotency key failed. Retry with a new idempotency key.",
            ),
        );
    }
    let body_text = String::from_utf8_lossy(&req.body).into_owned();
    if let Some((s, e, b)) = l.replies.get(&key).cloned() {
        // The same key with different parameters is refused, as Shopify does.
        if l.replies.get(&format!("{key}#body")).map(|x| &x.2) != Some(&body_text) {
            l.key_reuse_mismatch += 1;
        }
        return Action::Reply(s, e, b);
    }
    let item = q[0]["inventoryItemId"].as_str().unwrap_or("").to_owned();
    let to = q[0]["quantity"].as_i64().unwrap_or(0);
    if to > 1_000_000_000 {
        return Action::Reply(
            200,
            String::new(),
            user_error(
                "INVALID_QUANTITY_TOO_HIGH",
                json!(["input", "quantities", "0", "quantity"]),
                "The total quantity can't be higher than 1,000,000,000.",
            ),
        );
    }
    // 2026-01 still takes the deprecated spelling (it is refused above from 2026-04); its
    // refusal has its own code.
    let (field, compare) = match q[0].get("changeFromQuantity") {
        Some(c) => ("changeFromQuantity", c.as_i64()),
        None if input["ignoreCompareQuantity"] == true => ("compareQuantity", None),
        None => ("compareQuantity", q[0]["compareQuantity"].as_i64()),
    };
    let current = l.quantities.get(&item).copied();
    l.replies
        .insert(format!("{key}#body"), (0, String::new(), body_text));
    if compare.is_some() && compare != current {
        l.conflicts += 1;
        let (code, message) = if field == "changeFromQuantity" {
            (
                "CHANGE_FROM_QUANTITY_STALE",
                "The changeFromQuantity argument no longer matches the persisted quantity.",
            )
        } else {
            (
                "COMPARE_QUANTITY_STALE",
                "The compareQuantity value does not match persisted value.",
            )
        };
        let body = user_error(code, json!(["input", "quantities", "0", field]), message);
        l.replies.insert(key, (200, String::new(), body.clone()));
        return Action::Reply(200, String::new(), body);
    }
    let ok = (
        200,
        String::new(),
        json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": {"id": "gid://shopify/InventoryAdjustmentGroup/1"},
            "userErrors": []}}, "extensions": cost(avail)})
        .to_string(),
    );
    let applied = Applied {
        key,
        sku: item,
        from: current,
        to,
    };
    let fault = sh.roll(false);
    drop(l);
    match fault {
        None => {
            commit(sh, one(applied, ok.clone()));
            Action::Reply(ok.0, ok.1, ok.2)
        }
        Some(f) => Action::Fault(f, one(applied, ok.clone()), ok),
    }
}
