//! The analyst console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver), against the store (throwaway PostgreSQL) that the real component in the harness
//! forwards to. Predictions through the edge → the queue lists the ones sent to review → an
//! analyst labels three with the keyboard → the store's export has the three labels with the
//! analyst's name → after `trainer models upload` / `promote` / `shadow` the models page shows
//! live and shadow, their score distributions and the channel history.
//!
//! `SFE_CONSOLE_SHOTS=<dir>` saves a screenshot of each page there (empty store, queue, detail,
//! models), to look at.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{STORE_TOKEN, StoreService};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use store::auth::Role;

static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

const ANALYST: &str = "console-analyst-token-0123456789";
const READER: &str = "console-reader-token-01234567890";
const OPERATOR: &str = "console-operator-token-012345678";

/// A tokens-file line.
fn line(name: &str, role: Role, token: &str) -> String {
    store::auth::file_line(name, role, token) + "\n"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; scripts/setup.sh --tests installs it)",
            );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1366,900"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

/// Waits for `css` to match an element (the page renders after its fetches).
async fn wait_for(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
}

/// Waits until `css` exists and its text is `want`.
async fn wait_for_text(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{css} shows {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn shot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("SFE_CONSOLE_SHOTS") {
        let png = c.screenshot().await.unwrap();
        let path = PathBuf::from(dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// Fills the sign-in form with `token` and submits it.
async fn sign_in(c: &Client, token: &str) {
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#signin button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Presses one key on the page (the queue listens on the document).
async fn press(c: &Client, key: &str) {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, String) {
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn get(url: &str, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    answer(
        common::agent()
            .get(url)
            .header("authorization", &auth)
            .call()
            .unwrap(),
    )
}

fn post(url: &str, token: &str, body: &Value) -> (u16, String) {
    let auth = format!("Bearer {token}");
    answer(
        common::agent()
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap(),
    )
}

/// Sends `n` synthetic transactions (10 % anomalous) through the edge, explained.
fn predictions(edge: &str, n: usize, seed: u64) {
    let mut df = trainer::synth::transactions(n, 0.1, seed).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    trainer::data::write_frame(&path, &mut df).unwrap();
    let features = trainer::synth::LEGACY_FEATURES.map(String::from).to_vec();
    let table = trainer::data::read_features(&path, &features).unwrap();
    for i in 0..table.rows() {
        let mut payload = serde_json::Map::new();
        for (f, c) in features.iter().zip(&table.columns) {
            payload.insert(f.clone(), json!(c[i]));
        }
        // Seven cards, so that each has a history on its detail page.
        payload.insert("card_id".into(), json!(format!("card-{}", i % 7)));
        let (status, body) = post(
            &format!("{edge}/api/predict"),
            STORE_TOKEN,
            &Value::Object(payload),
        );
        assert_eq!(status, 200, "{body}");
    }
}

fn trainer_models(store: &str, args: &[&str]) -> String {
    let out = Command::new(common::trainer_binary())
        .arg("models")
        .args(args)
        .args(["--store", store, "--token", OPERATOR, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trainer models {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn upload(store: &str, model: &Path) -> String {
    let answer: Value =
        serde_json::from_str(&trainer_models(store, &["upload", model.to_str().unwrap()])).unwrap();
    answer["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_labels_the_review_queue_with_the_keyboard_in_a_real_browser() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        [
            line("dana", Role::Analyst, ANALYST),
            line("rita", Role::Reader, READER),
            line("otto", Role::Operator, OPERATOR),
        ]
        .concat(),
    )
    .unwrap();
    let store = StoreService::start_with_tokens(&pg.url(), &tokens);
    let store_url = store.url();
    let kv = tempfile::tempdir().unwrap();
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store_url.clone()),
        ("store_token".into(), STORE_TOKEN.into()),
        ("model_refresh_secs".into(), "1".into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv.path().to_path_buf());
    let edge = harness::start_edge(config).unwrap();

    let driver = Driver::start();
    let c = browser(&driver).await;
    let console = format!("{store_url}/console/");

    // Sign in as the analyst; an empty store says so instead of showing an empty table.
    c.goto(&console).await.unwrap();
    wait_for(&c, "#token").await;
    sign_in(&c, ANALYST).await;
    wait_for(&c, "#queue-empty").await;
    assert_eq!(text(&c, "#who").await, "dana (analyst)");
    shot(&c, "1-queue-empty").await;
    c.goto(&format!("{console}#/models")).await.unwrap();
    wait_for(&c, "#live-version").await;
    assert_eq!(text(&c, "#live-version").await, "the edges' embedded model");
    assert_eq!(text(&c, "#shadow-version").await, "none");
    shot(&c, "1-models-empty").await;

    // Traffic through the edge; the store gets what it decided.
    predictions(&edge.url(), 200, 5);
    let reviews = common::wait_for_count(1, Duration::from_secs(60), || {
        common::count(
            &pg,
            "select count(*) from transactions where decision = 'review'",
        )
    });
    let total = common::wait_for_count(200, Duration::from_secs(60), || {
        common::count(&pg, "select count(*) from transactions")
    });
    assert_eq!(total, 200);
    // What the queue and the detail show came with each event: why, and the answer's words.
    assert_eq!(
        common::count(
            &pg,
            "select count(*) from transactions where decision_reason is not null \
             and jsonb_array_length(risk_factors) = 3"
        ),
        200
    );
    let reviews = reviews.max(common::count(
        &pg,
        "select count(*) from transactions where decision = 'review'",
    ));
    assert!(reviews >= 3, "at least three reviews to label: {reviews}");

    // The queue lists exactly the review ones (first page: up to 50), newest first.
    c.goto(&format!("{console}#/queue")).await.unwrap();
    c.refresh().await.unwrap();
    wait_for(&c, "#queue-table").await;
    let listed = c
        .execute(
            "return Array.from(document.querySelectorAll('#queue-table tbody tr')).map(r => r.dataset.id)",
            vec![],
        )
        .await
        .unwrap();
    let listed: Vec<String> = serde_json::from_value(listed).unwrap();
    assert_eq!(listed.len() as u64, reviews.min(50));
    let stored = pg
        .psql(
            "select id from transactions where decision = 'review' \
             order by scored_at desc, id desc limit 50",
        )
        .unwrap();
    let stored: Vec<&str> = stored.lines().map(str::trim).collect();
    assert_eq!(listed, stored);
    shot(&c, "2-queue").await;

    // Each label moves the selection down: f, n, f label the first three rows.
    let started = Instant::now();
    for key in ["f", "n", "f"] {
        press(&c, key).await;
    }
    let labelled = common::wait_for_count(3, Duration::from_secs(20), || {
        common::count(
            &pg,
            "select count(*) from feedback where labelled_by = 'dana'",
        )
    });
    assert_eq!(labelled, 3);
    common::report(format!(
        "console: three labels from the keyboard stored in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    wait_for(&c, "#queue-table tbody tr:nth-child(3) .tag.fraud").await;
    // k twice back up to the second row, o opens its detail: its label and chart.
    press(&c, "k").await;
    press(&c, "k").await;
    press(&c, "o").await;
    wait_for(&c, "#labelling").await;
    wait_for(&c, "#explain-chart").await;
    // The card's other transactions, this one among them.
    wait_for(&c, "#card-recent tr.sel").await;
    let recent = c
        .execute(
            "return document.querySelectorAll('#card-recent tbody tr').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(recent.as_u64().unwrap() > 1, "{recent}");
    assert!(text(&c, "#labelling").await.contains("not fraud · dana"));
    shot(&c, "3-detail").await;

    // The export the trainer reads has the three, with the analyst's name and verdicts.
    let (status, export) = get(
        &format!("{store_url}/v1/feedback/export?format=ndjson"),
        READER,
    );
    assert_eq!(status, 200);
    let rows: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{export}");
    for (id, want) in listed.iter().take(3).zip([1, 0, 1]) {
        let row = rows
            .iter()
            .find(|r| r["transaction_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not exported: {export}"));
        assert_eq!(row["label"], want, "{row}");
        assert_eq!(row["labelled_by"], "dana", "{row}");
    }

    // The operator publishes: the embedded model goes live by name, a second one to shadow.
    let live = upload(&store_url, &BUILT.model_path);
    trainer_models(&store_url, &["promote", &live]);
    let other = common::fit_model(dir.path(), 2_000, 12, 50);
    let other_path = dir.path().join("other.sfm");
    std::fs::write(&other_path, other.to_bytes().unwrap()).unwrap();
    let shadow = upload(&store_url, &other_path);
    trainer_models(&store_url, &["shadow", &shadow]);
    // The edge follows within its refresh (1 s); then traffic scored by both.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        predictions(&edge.url(), 20, 6);
        let both = common::count(
            &pg,
            "select count(*) from transactions where shadow_model_version is not null",
        );
        if both >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never scored with the shadow"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The same comparison and drift from the operator's command line, drawn.
    for (args, file) in [
        (["compare", "--chart"], "compare.png"),
        (["drift", "--chart"], "drift.png"),
    ] {
        let png = dir.path().join(file);
        let mut args = args.to_vec();
        args.push(png.to_str().unwrap());
        let out: Value = serde_json::from_str(&trainer_models(&store_url, &args)).unwrap();
        assert!(out.is_object(), "{out}");
        let png = std::fs::read(&png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), (1000, 560), "{file}");
        if let Some(dir) = std::env::var_os("SFE_CONSOLE_SHOTS") {
            std::fs::write(PathBuf::from(dir).join(file), &png).unwrap();
        }
    }

    c.goto(&format!("{console}#/models")).await.unwrap();
    wait_for(&c, "#score-histogram").await;
    // The live model's drift per hour is drawn too.
    wait_for(&c, "#drift-chart").await;
    assert_eq!(text(&c, "#live-version").await, live);
    assert_eq!(text(&c, "#shadow-version").await, shadow);
    wait_for(&c, "#history").await;
    assert!(text(&c, "#history").await.contains("otto"));
    // An analyst may not promote: the page offers no button.
    assert!(c.find(Locator::Css("#promote")).await.is_err());
    shot(&c, "4-models").await;

    // An operator may: sign out, sign in as one, promote the shadow (confirming), roll back.
    c.find(Locator::Css("#signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#token").await;
    sign_in(&c, OPERATOR).await;
    // Signed in again on the page it was on: the models.
    wait_for(&c, "#promote").await;
    assert_eq!(text(&c, "#who").await, "otto (operator)");
    c.find(Locator::Css("#promote"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    let live_now = |want: &str| {
        let (_, body) = get(&format!("{store_url}/v1/models/channels"), READER);
        let channels: Value = serde_json::from_str(&body).unwrap();
        channels["live"]["version"] == want
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live_now(&shadow) {
        assert!(
            Instant::now() < deadline,
            "the promotion never reached the store"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The page re-reads the channels after the promotion: wait for it to show the new live
    // model before touching its buttons.
    wait_for_text(&c, "#live-version", &shadow).await;
    c.find(Locator::Css("#rollback"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live_now(&live) {
        assert!(
            Instant::now() < deadline,
            "the rollback never reached the store"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The page shows the rollback in its history once it has re-read it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let history = c
            .execute(
                "const h = document.querySelector('#history'); return h ? h.textContent : ''",
                vec![],
            )
            .await
            .unwrap();
        if history.as_str().is_some_and(|h| h.contains("rollback")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback in the page's history: {history}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The database goes away: the page says so instead of showing nothing.
    let mut pg = pg;
    pg.stop().unwrap();
    c.goto(&format!("{console}#/queue")).await.unwrap();
    c.refresh().await.unwrap();
    wait_for(&c, "#failure").await;
    let failure = text(&c, "#failure").await;
    assert!(failure.contains("database unavailable"), "{failure}");
    shot(&c, "5-database-down").await;

    c.close().await.unwrap();
    drop(edge);
    drop(store);
}
