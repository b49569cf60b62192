//! The driftless simulator: a WMS -> ERP -> storefront chain over simulated physical stock,
//! connected point-to-point (daily files, imports, polling) or through the real driftless core,
//! reproducing the six structural causes of drift with ground truth.
//!
//! # Layout
//! - [`scenario`]: parameters, the named scenarios and `--set` tuning.
//! - [`checkpoints`]: the checkpoint drill (systems reporting observations on the hub, the
//!   consistency rules), scored against its ground truth.
//! - [`config`]: the `driftless.toml` a run uses (generated, then parsed by `driftless-config`).
//! - [`world`]: the discrete-event model; on the hub it applies events through
//!   [`driftless_core::MemoryLedger`], the same fold, authority and units the server uses.
//! - [`truth`]: the true hand-off and cause of every drifting key.
//! - [`eval`]: precision and recall of an audit against the truth.
//! - [`replay`]: a hub run's events on an accelerated real clock, as JSON (`driftless demo`).
//! - [`seeds`]: the accuracy goals, and the evaluation over a range of seeds.
//! - [`summary`]: results as JSON and text.
//! - [`files`]: the `--out` files, and auditing them; the only module that reads or writes
//!   anything.
//! - [`rng`]: the seeded generator.
//!
//! A run is a pure function of its [`Params`]: same seed, same output, byte for byte.

pub mod checkpoints;
pub mod config;
pub mod eval;
pub mod files;
pub mod replay;
pub mod rng;
pub mod scenario;
pub mod seeds;
pub mod summary;
pub mod truth;
pub mod world;

pub use eval::{Evaluation, Reported, evaluate};
pub use scenario::{Architecture, Params, SCENARIOS};
pub use summary::Summary;
pub use truth::TruthRow;
pub use world::Run;

/// Why a run could not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Bad parameters (exit status 2 in the CLI).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write: {0}")]
    Io(String),
    /// The auditor could not read or refused the written files (`files::audit_dir`).
    #[error("{0}")]
    Audit(String),
    /// A bug in the simulator, never the user's input.
    #[error("simulator error: {0}")]
    Internal(String),
}

/// One change in a system's change log (DESIGN section 13): at `at` the value became `qty`,
/// written by `actor`, from upstream data of `source_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub sku: usize,
    /// `None`: channel level.
    pub loc: Option<usize>,
    pub at: i64,
    pub qty: i64,
    pub actor: String,
    pub source_at: Option<i64>,
    pub reference: String,
    /// The system's committed quantity after the change, for the ERP (the only system of the
    /// chain that keeps one); `None` for the others.
    pub committed: Option<i64>,
}

/// A finished run with its truth and summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run: Run,
    pub truth: Vec<TruthRow>,
    pub summary: Summary,
}

impl Outcome {
    /// The `--out` files.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        files::render(&self.run, &self.truth)
    }
}

/// Runs a simulation and computes its ground truth and summary.
pub fn simulate(params: &Params) -> Result<Outcome, SimError> {
    let run = world::run(params)?;
    let truth = truth::at_snapshot(&run);
    let settled = truth::settled(&run);
    let summary = summary::build(&run, &truth, settled.as_deref());
    Ok(Outcome {
        run,
        truth,
        summary,
    })
}
