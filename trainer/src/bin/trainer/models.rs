//! `trainer models`: the store's model registry: list and describe the registered versions,
//! point the `live` and `shadow` channels every edge follows, roll a channel back, read the
//! change history, upload a model file.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use trainer::registry::{Channel, Client};

use contract::models::{ChannelHistory, Channels, Comparison, Drift, ModelList, ModelVersion};

use crate::failure::{Classify, Failure};
use crate::output::Log;

const AFTER_HELP: &str = "\
Exit codes: 0 ok · 1 the store is unreachable, failing (5xx) or answering something unreadable:
an I/O failure, worth retrying · 2 the store refused the request (4xx: unknown version, nothing
to roll back, wrong token, a model file it does not accept), or bad flags.
--json prints the store's answer (the contract::models types) as JSON.";

/// The store's model registry: list versions, promote, shadow, roll back, history, upload.
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Which store, as whom, and how to print.
#[derive(clap::Args)]
struct Conn {
    /// The store's base URL: http:// or https://host[:port][/prefix].
    #[arg(long = "store", env = "SFE_STORE_URL", value_name = "URL")]
    store: String,
    /// The store's bearer token.
    #[arg(long, env = "SFE_STORE_TOKEN", hide_env_values = true)]
    token: String,
    /// A note recorded beside channel changes and uploads (default: $USER, else "trainer");
    /// the actor itself is the store token's name.
    #[arg(long)]
    actor: Option<String>,
    /// Print the store's answer as JSON (the contract::models types) instead of text.
    #[arg(long)]
    json: bool,
    /// Sign uploads and policies with this key (`trainer keygen`); else `SFE_SIGNING_KEY`
    /// holds the key itself; else they go unsigned (edges that trust keys refuse them).
    #[arg(long, env = "SFE_SIGNING_KEY_FILE", value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

impl Conn {
    fn client(&self) -> Result<Client, Failure> {
        let key = trainer::registry::signing_key(self.signing_key.as_deref())?;
        Ok(
            Client::new(&self.store, &self.token, &default_actor(self.actor.clone()))?
                .with_signing_key(key),
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// The registered versions, newest upload first, and what the channels point at.
    #[command(after_help = AFTER_HELP)]
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One registered version: checksum, size, features, metadata, channels, when edges used it.
    #[command(after_help = AFTER_HELP)]
    Show {
        /// The version (`if1-…`).
        version: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Point the live channel (the model the edges answer with) at VERSION.
    #[command(after_help = AFTER_HELP)]
    Promote {
        /// The version (`if1-…`), registered already.
        version: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Point the shadow channel (scored beside live, never answered with) at VERSION, or
    /// `none` to stop shadow scoring.
    #[command(after_help = AFTER_HELP)]
    Shadow {
        /// The version (`if1-…`), or `none`.
        target: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Undo the last change of a channel (recorded as a change itself; exit 2 when the
    /// channel was never changed).
    #[command(after_help = AFTER_HELP)]
    Rollback {
        /// The channel to roll back.
        #[arg(long, value_enum, default_value = "live")]
        channel: Channel,
        #[command(flatten)]
        conn: Conn,
    },
    /// The live model against the shadow on the transactions both scored: alert rates,
    /// agreement, rank correlation, decisions, the largest disagreements. `--chart` draws both
    /// score distributions on the same bins (PNG).
    #[command(after_help = AFTER_HELP)]
    Compare {
        /// The live side (default: the live channel).
        #[arg(long)]
        live: Option<String>,
        /// The shadow side (default: the shadow channel).
        #[arg(long)]
        shadow: Option<String>,
        /// Only transactions scored at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Write the score distributions as a PNG here.
        #[arg(long, value_name = "FILE.png")]
        chart: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A model's drift: PSI against its training distribution and alert rate, per hour.
    /// `--chart` draws both per hour (PNG).
    #[command(after_help = AFTER_HELP)]
    Drift {
        /// The version (default: the live channel's).
        version: Option<String>,
        /// How many hours back (1 to 720).
        #[arg(long, default_value_t = 48)]
        hours: u32,
        /// Write PSI and alert rate per hour as a PNG here.
        #[arg(long, value_name = "FILE.png")]
        chart: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Recorded channel changes, newest first.
    #[command(after_help = AFTER_HELP)]
    History {
        #[command(flatten)]
        conn: Conn,
    },
    /// Store a rule policy (TOML: rules, allow/block lists, defaults; docs/edge.md). Every
    /// edge follows it within its refresh interval, without a rebuild or restart. Checked
    /// here and by the store with the edge's parser (exit 2 naming the problem).
    #[command(after_help = AFTER_HELP)]
    PolicyPush {
        /// The policy file.
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the policy in force (exit 2 when none was stored).
    #[command(after_help = AFTER_HELP)]
    PolicyShow {
        #[command(flatten)]
        conn: Conn,
    },
    /// Register a model file (the store verifies it and names the reason when it refuses it).
    /// Changes no channel.
    #[command(after_help = AFTER_HELP)]
    Upload {
        /// The model file.
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `actor`, else `$USER`, else `trainer`.
pub fn default_actor(actor: Option<String>) -> String {
    actor
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "trainer".to_string())
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    match args.command {
        Command::PolicyPush { file, conn } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::Data(anyhow::anyhow!("reading {}: {e}", file.display())))?;
            // The edge's parser first: a typo fails here, before any request.
            let policy = rules::Policy::from_toml(&text)
                .map_err(|e| Failure::Usage(anyhow::anyhow!("{}: {e}", file.display())))?;
            let answer = conn.client()?.put_policy(text)?;
            let summary = format!(
                "policy revision {}: {} rules, {} lists",
                answer["revision"],
                policy.len(),
                policy.lists().count()
            );
            emit(&conn, log, "policy", &summary, &summary, &answer)
        }
        Command::PolicyShow { conn } => {
            let text = conn.client()?.policy()?;
            let summary = format!("{} bytes", text.len());
            emit(
                &conn,
                log,
                "policy",
                &summary,
                &text,
                &serde_json::json!({"policy": text}),
            )
        }
        Command::List { conn } => {
            let list = conn.client()?.list()?;
            let summary = format!(
                "{} models; {}",
                list.models.len(),
                channels_line(&list.channels)
            );
            emit(&conn, log, "models", &summary, &list_text(&list), &list)
        }
        Command::Show { version, conn } => {
            let model = conn.client()?.show(&version)?;
            let summary = format!("{} {}", model.version, model.checksum);
            emit(&conn, log, "model", &summary, &show_text(&model), &model)
        }
        Command::Promote { version, conn } => set(&conn, log, Channel::Live, Some(&version)),
        Command::Shadow { target, conn } => {
            let version = (target != "none").then_some(target.as_str());
            set(&conn, log, Channel::Shadow, version)
        }
        Command::Rollback { channel, conn } => {
            let client = conn.client()?;
            let before = client.channels()?;
            let after = client.rollback(channel)?;
            let line = change_line(channel, &before, &after);
            emit(&conn, log, "channel", &line, &format!("{line}\n"), &after)
        }
        Command::Compare {
            live,
            shadow,
            since,
            chart,
            conn,
        } => {
            let client = conn.client()?;
            let channels = client.channels()?;
            let live = live.or_else(|| Channel::Live.of(&channels).map(str::to_string));
            let shadow = shadow.or_else(|| Channel::Shadow.of(&channels).map(str::to_string));
            let (Some(live), Some(shadow)) = (live, shadow) else {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "nothing to compare: name --live and --shadow, or set both channels"
                )));
            };
            let c = client.compare(&live, &shadow, since.as_deref())?;
            if let Some(path) = &chart {
                comparison_chart(path, &c).map_err(Failure::Data)?;
            }
            let summary = format!(
                "{live} vs {shadow}: {} transactions, agreement {:.3}",
                c.transactions, c.agreement
            );
            emit(&conn, log, "comparison", &summary, &comparison_text(&c), &c)
        }
        Command::Drift {
            version,
            hours,
            chart,
            conn,
        } => {
            let client = conn.client()?;
            let version = match version {
                Some(v) => v,
                None => Channel::Live
                    .of(&client.channels()?)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Failure::Usage(anyhow::anyhow!(
                            "the live channel is the edges' embedded model: name a version"
                        ))
                    })?,
            };
            let d = client.drift(&version, hours)?;
            if let Some(path) = &chart {
                drift_chart(path, &d).map_err(Failure::Data)?;
            }
            let summary = format!(
                "{version}: {} transactions in {hours} h, PSI {}",
                d.overall.transactions,
                d.overall.psi.map_or("n/a".into(), |p| format!("{p:.4}"))
            );
            emit(&conn, log, "drift", &summary, &drift_text(&d), &d)
        }
        Command::History { conn } => {
            let history = conn.client()?.history()?;
            let summary = format!("{} channel changes", history.changes.len());
            emit(
                &conn,
                log,
                "history",
                &summary,
                &history_text(&history),
                &history,
            )
        }
        Command::Upload { file, conn } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))
                .data()?;
            let client = conn.client()?;
            let uploaded = client.upload(bytes)?;
            let line = format!(
                "uploaded {} as {} ({}): {}",
                file.display(),
                uploaded.version,
                uploaded.checksum,
                if uploaded.created {
                    "new"
                } else {
                    "already registered"
                }
            );
            emit(
                &conn,
                log,
                "uploaded",
                &line,
                &format!("{line}\n"),
                &uploaded,
            )
        }
    }
}

fn set(conn: &Conn, log: &Log, channel: Channel, version: Option<&str>) -> Result<(), Failure> {
    let client = conn.client()?;
    let before = client.channels()?;
    let after = client.set_channel(channel, version)?;
    let line = change_line(channel, &before, &after);
    emit(conn, log, "channel", &line, &format!("{line}\n"), &after)
}

/// `--json`: the answer, pretty; `--log-format json`: one event line; else the text.
fn emit<T: Serialize>(
    conn: &Conn,
    log: &Log,
    event: &str,
    summary: &str,
    text: &str,
    value: &T,
) -> Result<(), Failure> {
    let json = serde_json::to_value(value).internal()?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&json).internal()?);
    } else if log.json {
        log.event(event, summary, json);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn shown(version: Option<&str>) -> &str {
    version.unwrap_or("none")
}

/// `live: if1-aaaa → if1-bbbb`, or `live: if1-aaaa (unchanged)`.
fn change_line(channel: Channel, before: &Channels, after: &Channels) -> String {
    let (from, to) = (channel.of(before), channel.of(after));
    if from == to {
        format!("{channel}: {} (unchanged)", shown(to))
    } else {
        format!("{channel}: {} → {}", shown(from), shown(to))
    }
}

fn channels_line(channels: &Channels) -> String {
    format!(
        "live: {}, shadow: {} (revision {})",
        shown(Channel::Live.of(channels)),
        shown(Channel::Shadow.of(channels)),
        channels.revision
    )
}

fn time(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Rows as aligned columns (two spaces apart), the header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list_text(list: &ModelList) -> String {
    let rows: Vec<Vec<String>> = list
        .models
        .iter()
        .map(|m| {
            let meta = |k: &str| m.metadata.get(k).cloned().unwrap_or_else(|| "-".into());
            vec![
                m.version.clone(),
                time(m.uploaded_at.as_ref()),
                m.uploaded_by.clone().unwrap_or_else(|| "-".into()),
                if m.channels.is_empty() {
                    "-".into()
                } else {
                    m.channels.join(",")
                },
                meta("training_rows"),
                meta("n_estimators"),
                meta("seed"),
            ]
        })
        .collect();
    let mut out = format!("{}\n", channels_line(&list.channels));
    if rows.is_empty() {
        out.push_str("no models registered\n");
    } else {
        out.push_str(&table(
            &[
                "VERSION",
                "UPLOADED_AT",
                "UPLOADED_BY",
                "CHANNELS",
                "ROWS",
                "TREES",
                "SEED",
            ],
            &rows,
        ));
    }
    out
}

fn show_text(m: &ModelVersion) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "version      {}", m.version);
    let _ = writeln!(out, "checksum     {}", m.checksum);
    let _ = writeln!(out, "size         {} bytes", m.size_bytes);
    let _ = writeln!(
        out,
        "uploaded     {} by {}",
        time(m.uploaded_at.as_ref()),
        m.uploaded_by.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "scored with  {}",
        match (&m.first_seen, &m.last_seen) {
            (None, None) => "never (no forwarded events)".to_string(),
            (first, last) => format!(
                "first {}, last {}",
                time(first.as_ref()),
                time(last.as_ref())
            ),
        }
    );
    let _ = writeln!(
        out,
        "channels     {}",
        if m.channels.is_empty() {
            "-".to_string()
        } else {
            m.channels.join(", ")
        }
    );
    let _ = writeln!(out, "features     {}", m.features.join(", "));
    if !m.metadata.is_empty() {
        let _ = writeln!(out, "metadata");
        for (k, v) in &m.metadata {
            let _ = writeln!(out, "  {k} = {v}");
        }
    }
    out
}

/// Both score distributions as shares per bin, side by side (trainer evaluate's bars).
fn comparison_chart(path: &std::path::Path, c: &Comparison) -> anyhow::Result<()> {
    let h = c
        .score_histogram
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no transactions scored by both: nothing to draw"))?;
    let share = |counts: &[i64]| {
        let total = counts.iter().sum::<i64>().max(1) as f64;
        counts
            .iter()
            .map(|&n| Some(n as f64 / total))
            .collect::<Vec<_>>()
    };
    let (live, shadow) = (share(&h.live), share(&h.shadow));
    let y_max = live
        .iter()
        .chain(&shadow)
        .flatten()
        .fold(0.0f64, |m, &v| m.max(v));
    let groups = h
        .edges
        .windows(2)
        .map(|w| format!("{:.2}", (w[0] + w[1]) / 2.0))
        .collect();
    trainer::evaluate::panels_chart(
        path,
        (1000, 560),
        &[trainer::evaluate::Panel {
            title: format!(
                "anomaly score, {} transactions scored by both (below 0 = anomalous)",
                c.transactions
            ),
            y_desc: "share of the model's transactions".into(),
            groups,
            series: vec![
                (format!("live {}", c.live), live),
                (format!("shadow {}", c.shadow), shadow),
            ],
            y_max: y_max * 1.05,
        }],
    )
}

/// PSI and alert rate per hour, oldest on the left (x = hours before the newest).
fn drift_chart(path: &std::path::Path, d: &Drift) -> anyhow::Result<()> {
    let newest = d.hours.first().and_then(|h| h.hour);
    let x = |h: &contract::models::DriftWindow| match (h.hour, newest) {
        (Some(at), Some(newest)) => (at - newest).num_minutes() as f64 / 60.0,
        _ => 0.0,
    };
    let psi = d
        .hours
        .iter()
        .filter_map(|h| Some((x(h), h.psi?)))
        .rev()
        .collect();
    let alerts = d.hours.iter().map(|h| (x(h), h.alert_rate)).rev().collect();
    trainer::evaluate::lines_chart(
        path,
        &format!("drift of {} per hour", d.version),
        ("hours before the newest hour", "PSI / alert rate"),
        &[("PSI".into(), psi), ("alert rate".into(), alerts)],
    )
}

fn comparison_text(c: &Comparison) -> String {
    let mut out = format!(
        "live {} vs shadow {}: {} transactions\nalert rate {:.4} vs {:.4}, agreement {:.4}, rank correlation {}\n",
        c.live,
        c.shadow,
        c.transactions,
        c.live_alert_rate,
        c.shadow_alert_rate,
        c.agreement,
        c.rank_correlation
            .map_or("n/a".into(), |r| format!("{r:.4}"))
    );
    if let Some(d) = &c.decisions {
        out.push_str(&format!(
            "review {:.4} vs {:.4}, block {:.4} vs {:.4}, decisions agree {:.4}\n",
            d.live.review, d.shadow.review, d.live.block, d.shadow.block, d.agreement
        ));
    }
    out
}

fn drift_text(d: &Drift) -> String {
    let rows: Vec<Vec<String>> = d
        .hours
        .iter()
        .map(|h| {
            vec![
                time(h.hour.as_ref()),
                h.transactions.to_string(),
                format!("{:.4}", h.alert_rate),
                h.psi.map_or("n/a".into(), |p| format!("{p:.4}")),
            ]
        })
        .collect();
    table(&["hour", "transactions", "alert rate", "PSI"], &rows)
}

fn history_text(h: &ChannelHistory) -> String {
    if h.changes.is_empty() {
        return "no channel changes recorded\n".to_string();
    }
    let rows: Vec<Vec<String>> = h
        .changes
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                time(Some(&c.changed_at)),
                c.channel.clone(),
                c.action.clone(),
                format!("{} → {}", shown(c.from.as_deref()), shown(c.to.as_deref())),
                // The token's name; what the caller said about itself in parentheses.
                match &c.note {
                    Some(note) => format!("{} ({note})", c.changed_by),
                    None => c.changed_by.clone(),
                },
            ]
        })
        .collect();
    table(
        &["ID", "CHANGED_AT", "CHANNEL", "ACTION", "CHANGE", "BY"],
        &rows,
    )
}
