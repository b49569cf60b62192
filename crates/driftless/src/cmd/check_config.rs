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
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} systems, {} channels, {} unit rules, {} hops; {} warning(s))",
                args.file.display(),
                s.systems.len(),
                s.channels.len(),
                s.rules.units.rules().len(),
                s.hops.len(),
                s.warnings.len()
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
    /// The bearer token a system will send. Without it the token is read from standard input
    /// (one line; the trailing newline is not part of it), so it need not sit in shell history.
    pub token: Option<String>,
}

pub fn token_hash(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let token = match args.token {
        Some(t) => t,
        None => {
            use std::io::IsTerminal;
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("type the token, then Enter:");
            }
            let mut line = String::new();
            stdin.read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    // The hub trims the token it receives, so a token with outer spaces could never match.
    if token.trim().is_empty() || token.trim() != token {
        anyhow::bail!(
            "the token is empty or starts or ends with whitespace; the hub compares the trimmed token"
        );
    }
    println!("{}", hex::encode(Sha256::digest(token.as_bytes())));
    Ok(ExitCode::SUCCESS)
}
