//! `trainer keygen`: a new ed25519 key pair for signing published models and policies.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use contract::signing::SecretKey;

use crate::failure::Failure;
use crate::output::Log;

/// Make a signing key: the secret goes to --out (owner-only, never overwritten), the public key
/// is printed for the edges' `trusted_keys`. Publish with `--signing-key FILE`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the secret key (created; refused if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: &Args, log: &Log) -> Result<(), Failure> {
    let mut seed = [0u8; 32];
    // rand's thread generator: a cryptographically secure generator seeded from the OS.
    rand::fill(&mut seed);
    let key = SecretKey::from_seed(seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&args.out)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                args.out.display()
            )
        })
        .map_err(Failure::Usage)?;
    writeln!(file, "{}", key.to_text())
        .with_context(|| format!("writing {}", args.out.display()))
        .map_err(Failure::Internal)?;
    let public = key.public().to_string();
    log.event(
        "keygen",
        &format!("secret key: {}\npublic key (give it to the edges' trusted_keys): {public}", args.out.display()),
        serde_json::json!({"secret_key_file": args.out.display().to_string(), "public_key": public}),
    );
    Ok(())
}
