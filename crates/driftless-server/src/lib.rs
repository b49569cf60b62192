//! The hub's HTTP surface: axum routes over a [`Store`], authentication, limits, and a server that
//! binds first and then runs until told to stop.
//!
//! # Layout
//! - [`wire`]: the canonical JSON event and request bodies.
//! - [`routes`]: the handlers.
//! - [`auth`]: bearer tokens.
//! - [`error`]: the one error type of this boundary.
//! - [`asof`]: the inventory object with its version, now or as of a moment; [`audits`]: stored
//!   audits; [`console`]: the operator's routes (dashboard, API description, metrics).
//! - [`fanout`]: the per-channel dispatchers; [`channels`] and [`matrix`]: their HTTP surface.
//!
//! Most tests build [`app`] in-process; the binary uses [`Server`].

pub mod asof;
pub mod audits;
pub mod auth;
pub mod bus;
pub mod channels;
pub mod console;
pub mod dashboard;
pub mod epcis;
pub mod error;
pub mod events;
pub mod fanout;
pub mod matrix;
pub mod metrics;
pub mod observations;
pub mod openapi;
pub mod reqid;
pub mod routes;
pub mod shopify_webhook;
pub mod wire;

use axum::Router;
use driftless_config::Settings;
use driftless_core::ChannelSpec;
use driftless_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub tokens: Arc<auth::Tokens>,
    pub channels: Arc<Vec<ChannelSpec>>,
    pub metrics: Arc<metrics::Metrics>,
    /// How the fan-out dispatchers run (tests shorten the timings).
    pub fanout: Arc<fanout::FanoutOptions>,
    /// The hub's clock: `received_at`, and what `occurred_at` may not be too far ahead of. A
    /// function so that tests can set the time.
    pub clock: Clock,
    /// The JetStream event bus, when `[server] nats_url` is set: events go through it to the
    /// appliers instead of straight to the store.
    pub bus: Option<Arc<driftless_bus::Bus>>,
    /// Observations per system per second (`[checkpoints] max_observations_per_second`).
    pub observations: Arc<observations::Limiter>,
}

/// Where the hub reads the time.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("origin", &self.settings.origin)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> AppState {
        let rate = settings.checkpoints.max_observations_per_second;
        AppState {
            tokens: Arc::new(auth::Tokens::from_settings(&settings)),
            channels: Arc::new(settings.channel_specs()),
            metrics: Arc::default(),
            settings: Arc::new(settings),
            store,
            fanout: Arc::new(fanout::FanoutOptions::default()),
            clock: Arc::new(chrono::Utc::now),
            bus: None,
            observations: Arc::new(observations::Limiter::new(rate)),
        }
    }
}

/// The router, for in-process tests and for [`Server`].
pub fn app(state: AppState) -> Router {
    reqid::layer(routes::router(state))
}

/// A bound server. Binding happens in [`Server::bind`] so that the caller learns the address (port 0
/// is allowed) before serving starts.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(addr: &str, state: AppState) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish (each
    /// of which only answers once its events are durable) and closes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let store = self.state.store.clone();
        let bus = self.state.bus.clone();
        let header_timeout = self.state.settings.server.header_read_timeout;
        let (fanout, _) = fanout::Fanout::start(&self.state);
        // A system that reported a drifting value once and fell silent still opens its
        // `handoff_drift` once the SLA has passed: the checkpoints are swept now and then.
        let sweeper = {
            let st = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(observations::SWEEP_EVERY);
                loop {
                    every.tick().await;
                    if let Err(e) = observations::sweep(&st).await {
                        tracing::warn!(error = %e, "checkpoint sweep failed");
                    }
                }
            })
        };
        let router = app(self.state);
        serve(self.listener, router, header_timeout, shutdown).await;
        sweeper.abort();
        let _ = sweeper.await;
        // The appliers finish their group before the store closes; what they had not taken stays
        // in JetStream for the next start (or another hub process).
        if let Some(bus) = bus {
            bus.stop().await;
        }
        // Dispatchers stop before the store closes, so their last results are recorded.
        fanout.stop().await;
        store.close().await;
        Ok(())
    }
}

/// The accept loop: HTTP/1.1 connections with a header read timeout (hyper starts it whenever it
/// waits for a request, so it also closes a kept-alive connection that stays idle), graceful
/// shutdown (stop accepting, let each connection finish its request, then close). axum's own
/// `serve` sets no timer, so a client could hold a connection open forever by sending one header
/// byte at a time.
async fn serve(
    mut listener: TcpListener,
    router: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::serve::Listener;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    // Dropping `stop_rx` tells every connection to finish; each holds a clone of `done_rx`, so
    // `done_tx.closed()` resolves when the last one has.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            // Accept errors (EMFILE, ...) are retried inside `accept` after a pause.
            conn = Listener::accept(&mut listener) => conn,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop_tx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = std::pin::pin!(stop.closed());
            let mut asked = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = &mut stopping, if !asked => {
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done);
        });
    }
    drop(stop_rx);
    drop(listener);
    drop(done_rx);
    done_tx.closed().await;
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this function is
/// called, not when the future is first polled, so a signal that arrives between start-up and
/// serving still stops the server gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = streams;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term.take()) => {},
                _ = wait(int.take()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested; draining in-flight requests");
    }
}
