use driftless_config::Settings;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file to check.
    pub file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match Settings::load(Some(&args.file)) {
        Ok(s) => {
            println!(
                "{}: ok ({} systems, {} channels, {} unit rules, {} hops)",
                args.file.display(),
                s.systems.len(),
                s.channels.len(),
                s.rules.units.rules().len(),
                s.hops.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::from(2))
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The bearer token a system will send.
    pub token: String,
}

pub fn token_hash(args: TokenArgs) -> anyhow::Result<ExitCode> {
    println!("{}", hex::encode(Sha256::digest(args.token.as_bytes())));
    Ok(ExitCode::SUCCESS)
}
