//! `trainer`: fits SecureFlow Edge models from exported transactions.
//!
//! This file parses the command line, runs one subcommand (a module each) and maps the outcome
//! to an exit code by the failure's kind ([`failure::Failure`]). Exit codes (stable, for
//! schedulers and scripts): 0 success · 1 unexpected failure · 2 usage error (bad flags) ·
//! 3 data error (inputs missing, unreadable or invalid; model file corrupt) · 4 quality gate
//! refused to publish.
//!
//! # The model registry (`trainer models …`, `fit --publish store+http(s)://…`)
//!
//! The store keeps uploaded model files and two channels every edge follows: `live` (the
//! model answers come from; none = the edge's embedded model) and `shadow` (also scored,
//! never answered with). Every command takes `--store URL` (env `SFE_STORE_URL`), `--token`
//! (env `SFE_STORE_TOKEN`; the store records the token's name as the actor), `--actor` (a note
//! kept beside it; default `$USER`, else `trainer`) and `--json` (print the store's answer, the `contract::models` types):
//!
//! ```text
//! trainer models list                  versions, newest first: uploaded at/by, channels, rows, trees, seed
//! trainer models show if1-1a2b3c4d     checksum, size, features, metadata, when edges scored with it
//! trainer models promote if1-1a2b3c4d  live: if1-00aa11bb → if1-1a2b3c4d
//! trainer models shadow if1-1a2b3c4d   (or `shadow none`: stop shadow scoring)
//! trainer models rollback [--channel live|shadow]   undo the channel's last change
//! trainer models history               every recorded channel change, newest first
//! trainer models upload model.sfm      register a file (the store verifies it); no channel changes
//! ```
//!
//! `trainer fit … --publish store+https://store.internal:8080 --store-token …` uploads the
//! fitted model instead of writing a directory: with `--gate-input` it must first not be worse
//! than the registry's current `live` model (exit 4 otherwise; no live model = nothing to
//! compare), and no channel changes unless `--promote` (then live points at it).
//!
//! Exit codes of registry calls: 1 when the store is unreachable, fails (5xx) or answers
//! something unreadable (an I/O failure, worth retrying); 2 when it refuses the request (4xx:
//! unknown version, nothing to roll back, wrong token, a model file it does not accept).

mod args;
mod backtest;
mod evaluate;
mod export;
mod failure;
mod features;
mod fit;
mod import_sklearn;
mod inspect;
mod keygen;
mod models;
mod output;
mod score;
mod synth;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

use output::Log;

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 unexpected failure (I/O; model registry unreachable or 5xx), 2 usage error
(or the registry refused the request: 4xx), 3 data error, 4 quality gate refused.
Inputs: local paths or globs, file:// URLs, or object-store URLs (s3://bucket/prefix/*.parquet,
gs://, az://, https://). S3 settings come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT... unless given with --s3-* flags. See docs/trainer.md.";

#[derive(Parser)]
#[command(
    version,
    about = "Fit SecureFlow Edge anomaly models and write the model file the worker embeds.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Log output: text for people, json (one object per line) for log collectors; auto picks
    /// text on a terminal and json otherwise. Every subcommand honours it.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    Fit(Box<fit::Args>),
    Features(features::Args),
    Backtest(backtest::Args),
    Inspect(inspect::Args),
    Evaluate(evaluate::Args),
    Export(export::Args),
    ImportSklearn(import_sklearn::Args),
    Score(score::Args),
    Synth(synth::Args),
    Models(models::Args),
    Keygen(keygen::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let log = Log { json };
    let outcome = match cli.command {
        Command::Fit(a) => fit::run(*a, &log),
        Command::Features(a) => features::run(a, &log),
        Command::Backtest(a) => backtest::run(a, &log),
        Command::Inspect(a) => inspect::run(a, &log),
        Command::Evaluate(a) => evaluate::run(a, &log),
        Command::Export(a) => export::run(a, &log),
        Command::ImportSklearn(a) => import_sklearn::run(a, &log),
        Command::Score(a) => score::run(a, &log),
        Command::Synth(a) => synth::run(a, &log),
        Command::Models(a) => models::run(a, &log),
        Command::Keygen(a) => keygen::run(&a, &log),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let code = failure.exit_code();
            let error = failure.error();
            if log.json {
                let msg = format!("{error:#}");
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "error", "exit_code": code, "message": msg})
                );
            } else {
                eprintln!("Error: {error:?}");
            }
            ExitCode::from(code)
        }
    }
}
