//! `trainer`: fits SecureFlow Edge models from exported transactions.
//!
//! This file parses the command line, runs one subcommand (a module each) and maps the outcome
//! to an exit code by the failure's kind ([`failure::Failure`]). Exit codes (stable, for
//! schedulers and scripts): 0 success · 1 unexpected failure · 2 usage error (bad flags) ·
//! 3 data error (inputs missing, unreadable or invalid; model file corrupt) · 4 quality gate
//! refused to publish.

mod args;
mod evaluate;
mod export;
mod failure;
mod fit;
mod import_sklearn;
mod inspect;
mod output;
mod score;
mod synth;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

use output::Log;

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 unexpected failure, 2 usage error, 3 data error, 4 quality gate refused.
Inputs: local paths or globs, file:// URLs, or object-store URLs (s3://bucket/prefix/*.parquet,
gs://, az://, https://). S3 settings come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT... unless given with --s3-* flags. See docs/operations.md.";

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
    Fit(fit::Args),
    Inspect(inspect::Args),
    Evaluate(evaluate::Args),
    Export(export::Args),
    ImportSklearn(import_sklearn::Args),
    Score(score::Args),
    Synth(synth::Args),
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
        Command::Fit(a) => fit::run(a, &log),
        Command::Inspect(a) => inspect::run(a, &log),
        Command::Evaluate(a) => evaluate::run(a, &log),
        Command::Export(a) => export::run(a, &log),
        Command::ImportSklearn(a) => import_sklearn::run(a, &log),
        Command::Score(a) => score::run(a, &log),
        Command::Synth(a) => synth::run(a, &log),
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
