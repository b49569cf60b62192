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
pub mod channels;
pub mod console;
pub mod dashboard;
pub mod error;
pub mod fanout;
pub mod matrix;
pub mod metrics;
pub mod openapi;
pub mod reqid;
pub mod routes;
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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("origin", &self.settings.origin)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> AppState {
        AppState {
            tokens: Arc::new(auth::Tokens::from_settings(&settings)),
            channels: Arc::new(settings.channel_specs()),
            metrics: Arc::default(),
            settings: Arc::new(settings),
            store,
            fanout: Arc::new(fanout::FanoutOptions::default()),
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
        let (fanout, _) = fanout::Fanout::start(&self.state);
        let router = app(self.state);
        let r = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        // Dispatchers stop before the store closes, so their last results are recorded.
        fanout.stop().await;
        store.close().await;
        r
    }
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
