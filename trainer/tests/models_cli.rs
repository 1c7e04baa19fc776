//! `trainer models …` and `trainer fit --publish store+http://…` against a real store (in
//! process) on a real throwaway PostgreSQL: publishing, the channels, rollback, the history,
//! and the exit codes of refusals and of an unreachable store.

mod common;

use common::p;
use harness::postgres::TempPostgres;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;
use trainer::registry::{Client, RegistryError};

const TOKEN: &str = "models-cli-token-0123456789abcdef";
/// An edge's token on the same store: it may read the channels but not publish.
const EDGE_TOKEN: &str = "models-cli-edge-token-0123456789";

/// The store (`store/`), migrated and serving on a free loopback port on a runtime thread of
/// its own; stopped gracefully on drop.
struct StoreService {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreService {
    /// The store knows two named tokens: `ci-bot` (operator, [`TOKEN`]) and `edge-eu1`
    /// (edge, [`EDGE_TOKEN`]).
    fn start(database_url: &str) -> Self {
        let tokens = tempfile::NamedTempFile::new().unwrap();
        let line = |name: &str, role: &str, token: &str| {
            let hash: String = store::auth::hash(token)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{name} {role} sha256:{hash}\n")
        };
        let text = line("ci-bot", "operator", TOKEN) + &line("edge-eu1", "edge", EDGE_TOKEN);
        std::fs::write(tokens.path(), text).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = database_url.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config = store::Config::new(url, TOKEN);
                (config.token, config.tokens_file) = (None, Some(tokens.path().to_path_buf()));
                let store = store::Store::new(config).unwrap();
                store.migrate().await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                store::serve(listener, store, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("store did not start");
        StoreService {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StoreService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `trainer args…` with the store's URL and token in the environment (as an operator's
/// shell has them) and `USER=operator`.
fn run(store: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .env("SFE_STORE_URL", store)
        .env("SFE_STORE_TOKEN", TOKEN)
        .env("USER", "operator")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running trainer")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs, requires success, returns stdout.
fn ok(store: &str, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "trainer {args:?} failed ({:?}): {}",
        out.status.code(),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs with `--json`, requires success, returns the parsed answer.
fn json(store: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(store, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e} in {text}"))
}

/// The one `published` event of a `fit --log-format json` run.
fn published(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "published")
        .unwrap_or_else(|| panic!("no published event in {stdout}"))
}

fn version_of(path: &std::path::Path) -> String {
    model_format::ModelId::of(&std::fs::read(path).unwrap())
        .unwrap()
        .version()
}

/// A loopback port nothing listens on.
/// The `X-Signature` the store serves with a model file.
fn signature_of(store: &str, version: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{store}/v1/models/{version}/file"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        r.headers()
            .get("x-signature")
            .map(|v| v.to_str().unwrap().to_string())
    })
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn publish_promote_shadow_rollback_and_history_against_a_real_store() {
    let pg = TempPostgres::start().expect("starting PostgreSQL");
    let service = StoreService::start(&pg.url());
    let url = service.url();
    let dest = format!("store+{url}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (train, holdout) = (d.join("train.parquet"), d.join("holdout.parquet"));
    for (path, rows, seed) in [(&train, "3000", "1"), (&holdout, "2000", "3")] {
        ok(
            &url,
            &["synth", "--output", p(path), "--rows", rows, "--seed", seed],
        );
    }
    let fit = |seed: &str, trees: &str, output: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "fit",
            "--input",
            p(&train),
            "--seed",
            seed,
            "--n-estimators",
            trees,
            "--output",
            p(output),
            "--publish",
            &dest,
            "--gate-input",
            p(&holdout),
            "--actor",
            "ci-bot",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&url, &args)
    };

    // A: uploaded, no channel moves (nothing live yet: the gate has nothing to compare).
    let (a_path, b_path) = (d.join("a.sfm"), d.join("b.sfm"));
    let out = fit("1", "50", &a_path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = version_of(&a_path);
    let event = published(&stdout(&out));
    assert_eq!(event["version"], a.as_str());
    assert_eq!(event["registry"]["uploaded"]["created"], true);
    assert_eq!(event["registry"]["promoted"], false);
    assert!(event["registry"]["channels"]["live"].is_null(), "{event}");
    assert!(event["previous"].is_null());
    assert!(event["previous_metrics"].as_object().unwrap().is_empty());
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("channels unchanged"),
        "{event}"
    );
    let channels = json(&url, &["models", "list"])["channels"].clone();
    assert!(channels["live"].is_null() && channels["shadow"].is_null());

    // B, with --promote: live → B.
    let out = fit("2", "50", &b_path, &["--promote"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = version_of(&b_path);
    assert_ne!(a, b);
    let event = published(&stdout(&out));
    assert_eq!(event["registry"]["promoted"], true);
    assert_eq!(event["registry"]["channels"]["live"]["version"], b.as_str());
    assert_eq!(
        event["message"].as_str().unwrap(),
        format!("published {b} to the registry at {url} (new); live: none → {b}")
    );

    // Re-uploading the same bytes is idempotent and says so.
    let up = json(&url, &["models", "upload", p(&a_path)]);
    assert_eq!(up["version"], a.as_str());
    assert_eq!(up["created"], false);

    // Signed: `keygen` writes an owner-only secret key (never over an existing one) and prints
    // the public key; an upload with --signing-key carries a signature that key verifies.
    let key = d.join("signing.key");
    let made = ok(&url, &["keygen", "--out", p(&key), "--log-format", "json"]);
    let made: Value = serde_json::from_str(made.trim()).unwrap();
    let public: contract::signing::PublicKey =
        made["public_key"].as_str().unwrap().parse().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        run(&url, &["keygen", "--out", p(&key)]).status.code(),
        Some(2)
    );
    ok(
        &url,
        &["models", "upload", p(&a_path), "--signing-key", p(&key)],
    );
    let client = Client::new(&url, TOKEN, "test").unwrap();
    let bytes = client.file(&a).unwrap();
    let signature = signature_of(&url, &a);
    let signer = contract::signing::verify(
        contract::signing::Signed::Model,
        &bytes,
        signature.as_deref(),
        &[public],
        false,
    );
    assert!(signer.is_ok(), "{signature:?}: {signer:?}");

    // The gate now compares against live (B): a crippled model is refused (exit 4), and
    // nothing is uploaded.
    let worse = fit(
        "9",
        "2",
        &d.join("worse.sfm"),
        &["--max-samples", "16", "--gate-tolerance", "0", "--promote"],
    );
    assert_eq!(worse.status.code(), Some(4), "{}", stderr(&worse));
    assert!(
        stderr(&worse).contains(&format!("is worse than live {b}")),
        "{}",
        stderr(&worse)
    );

    // The list: both, newest first, live on B, uploaders and metadata recorded.
    let list = json(&url, &["models", "list"]);
    let models = list["models"].as_array().unwrap();
    let versions: Vec<&str> = models
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [b.as_str(), a.as_str()]);
    assert_eq!(list["channels"]["live"]["version"], b.as_str());
    assert!(list["channels"]["shadow"].is_null());
    assert_eq!(models[0]["channels"], serde_json::json!(["live"]));
    assert_eq!(models[1]["channels"], serde_json::json!([]));
    assert_eq!(models[0]["uploaded_by"], "ci-bot");
    assert_eq!(models[1]["metadata"]["seed"], "1");
    assert_eq!(models[1]["metadata"]["n_estimators"], "50");
    let text = ok(&url, &["models", "list", "--log-format", "text"]);
    assert!(
        text.starts_with(&format!("live: {b}, shadow: none")),
        "{text}"
    );
    let row_a = text.lines().find(|l| l.starts_with(&a)).unwrap();
    assert!(row_a.contains("ci-bot") && row_a.contains("3000"), "{text}");

    let show = json(&url, &["models", "show", &a]);
    assert_eq!(
        show["features"],
        serde_json::json!(trainer::synth::LEGACY_FEATURES)
    );
    assert_eq!(
        show["size_bytes"],
        std::fs::metadata(&a_path).unwrap().len()
    );

    // Nothing to roll back on a channel never changed: a refused request, exit 2.
    let out = run(&url, &["models", "rollback", "--channel", "shadow"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("409") && stderr(&out).contains("nothing to roll back"),
        "{}",
        stderr(&out)
    );

    // promote A (text: one line), shadow B, shadow none, rollback live.
    let line = ok(
        &url,
        &[
            "models",
            "promote",
            &a,
            "--log-format",
            "text",
            "--actor",
            "alice",
        ],
    );
    assert_eq!(line, format!("live: {b} → {a}\n"));
    let ch = json(&url, &["models", "shadow", &b]);
    assert_eq!(ch["shadow"]["version"], b.as_str());
    assert_eq!(ch["live"]["version"], a.as_str());
    let ch = json(&url, &["models", "shadow", "none"]);
    assert!(ch["shadow"].is_null(), "{ch}");
    let line = ok(&url, &["models", "rollback", "--log-format", "text"]);
    assert_eq!(line, format!("live: {a} → {b}\n"));
    let ch = json(&url, &["models", "list"])["channels"].clone();
    assert_eq!(ch["live"]["version"], b.as_str());
    assert!(ch["shadow"].is_null());

    // The history, newest first: every change, by whom, and how.
    let history = json(&url, &["models", "history"]);
    let changes: Vec<(String, Value, Value, String, String)> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_string(),
                c["from"].clone(),
                c["to"].clone(),
                c["action"].as_str().unwrap().to_string(),
                // Who the caller said it was (`--actor`, `$USER`): a note beside the token.
                c["note"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let v = |s: &str| Value::from(s);
    let expected = vec![
        (
            "live".into(),
            v(&a),
            v(&b),
            "rollback".into(),
            "operator".into(),
        ),
        (
            "shadow".into(),
            v(&b),
            Value::Null,
            "set".into(),
            "operator".into(),
        ),
        (
            "shadow".into(),
            Value::Null,
            v(&b),
            "set".into(),
            "operator".into(),
        ),
        ("live".into(), v(&b), v(&a), "set".into(), "alice".into()),
        ("live".into(), Value::Null, v(&b), "set".into(), "-".into()),
    ];
    assert_eq!(changes, expected, "{history}");
    // The actor of every change is the token's name, whatever the caller called itself.
    let actors: Vec<&str> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["changed_by"].as_str().unwrap())
        .collect();
    assert!(actors.iter().all(|a| *a == "ci-bot"), "{actors:?}");
    let ids: Vec<i64> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let text = ok(&url, &["models", "history", "--log-format", "text"]);
    assert!(
        text.lines().nth(1).unwrap().contains(&format!("{a} → {b}")),
        "{text}"
    );

    // A corrupt file: the store refuses it and says why; exit 2, nothing registered.
    let mut bad = std::fs::read(&a_path).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    std::fs::write(d.join("bad.sfm"), &bad).unwrap();
    let out = run(&url, &["models", "upload", p(&d.join("bad.sfm"))]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("400") && stderr(&out).contains("not a valid model file"),
        "{}",
        stderr(&out)
    );
    // The same refusal through the library client publish uses, typed.
    let client = Client::new(&url, TOKEN, "ci").unwrap();
    match client.upload(bad) {
        Err(RegistryError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.contains("not a valid model file"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.list().unwrap().models.len(), 2);

    // An unknown version: exit 2 (the caller's input), the store's reason shown.
    let out = run(&url, &["models", "promote", "if1-00000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("404") && stderr(&out).contains("if1-00000000"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &url,
        &["models", "show", "if1-00000000", "--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["event"], "error");
    assert_eq!(err["exit_code"], 2);

    // A wrong token: refused with 401, exit 2.
    let out = run(
        &url,
        &["models", "list", "--token", "not-the-token-0123456789"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // An edge's token may neither list nor promote: 403 naming the role, exit 2 (a refusal).
    assert!(
        run(&url, &["models", "list", "--token", EDGE_TOKEN])
            .status
            .code()
            == Some(2)
    );
    let out = run(&url, &["models", "promote", &a, "--token", EDGE_TOKEN]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("403") && stderr(&out).contains("needs the role operator"),
        "{}",
        stderr(&out)
    );

    // An unreachable store: the I/O exit code, 1, for `models` and for publishing alike.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let out = run(&closed, &["models", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    let out = run(
        &closed,
        &[
            "fit",
            "--input",
            p(&train),
            "--n-estimators",
            "5",
            "--publish",
            &format!("store+{closed}"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Flags that cannot work fail before any fitting: exit 2.
    let out = run(
        &url,
        &[
            "fit",
            "--input",
            p(&train),
            "--output",
            p(&d.join("x.sfm")),
            "--promote",
            "--publish",
            p(&d.join("dir")),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(
        &url,
        &["models", "list", "--store", "ftp://example.invalid"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The channels are where the last successful command left them.
    let ch = client.channels().unwrap();
    assert_eq!(ch.live.map(|t| t.version), Some(b));
    assert_eq!(ch.shadow, None);
}

#[test]
fn client_settings_and_error_texts() {
    let c = Client::new("https://example.invalid/store/", "t0ken", "ci").unwrap();
    assert_eq!(c.base(), "https://example.invalid/store");
    assert_eq!(
        c.url(&["v1", "models", "a/b"]).as_str(),
        "https://example.invalid/store/v1/models/a%2Fb"
    );
    for (url, token) in [
        ("ftp://host", "t"),
        ("not a url", "t"),
        ("http://h?x=1", "t"),
        ("http://h", ""),
        ("http://h", "to ken"),
    ] {
        let e = Client::new(url, token, "ci").err().unwrap();
        assert!(matches!(e, RegistryError::Config(_)), "{url} {token}: {e}");
        assert!(e.is_refused_request());
    }
    assert_eq!(
        trainer::registry::publish_target("store+http://h:1"),
        Some("http://h:1")
    );
    assert_eq!(
        trainer::registry::publish_target("s3://bucket/models"),
        None
    );
    let e = RegistryError::Refused {
        request: "GET /v1/models".into(),
        status: 401,
        message: "missing or invalid bearer token".into(),
    };
    assert_eq!(
        e.to_string(),
        "the store refused GET /v1/models: 401 Unauthorized: missing or invalid bearer token"
    );
    assert!(e.is_refused_request());
    let e = RegistryError::Refused {
        request: "GET /v1/models".into(),
        status: 503,
        message: "database not ready".into(),
    };
    assert!(!e.is_refused_request());
}
