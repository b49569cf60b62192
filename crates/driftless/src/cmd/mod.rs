//! One module per subcommand; each exposes `Args` and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod audit;
pub mod bus;
pub mod check_config;
pub mod demo;
pub mod drill;
pub mod import;
pub mod ledger;
pub mod matrix;
pub mod self_audit;
pub mod serve;
pub mod simulate;
pub mod trend;
