//! The benchmarks' log: off unless the named environment variable holds a filter (for example
//! `driftless_store=debug`, or `sqlx::query=debug` for every statement with its time), then to
//! stderr so it never mixes with the figures on stdout. Included with `#[path]`.

pub fn init_from_env(var: &str) {
    if let Ok(filter) = std::env::var(var) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
}
