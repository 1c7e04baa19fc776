//! Ingest throughput and listing latency of a store that has grown: a throwaway PostgreSQL, the
//! store served in-process on loopback, optionally `BENCH_PREFILL_ROWS` transactions written
//! straight into the (partitioned) table first, then a few concurrent HTTP clients posting
//! batches of scored-transaction events (events/s), then the listing at page 1 and at a deep
//! page, by page number and by keyset cursor, beside the two statements the listing ran before
//! keyset pagination (`count(*)` + `OFFSET`), executed on the same table.
//!
//! `cargo bench -p store --bench ingest` (env: BENCH_CLIENTS=4, BENCH_BATCHES=150 per client,
//! BENCH_BATCH_SIZE=100, BENCH_POOL=16, BENCH_PREFILL_ROWS=0, BENCH_DEEP_PAGE=10000,
//! BENCH_LIST_SAMPLES=200; BENCH_HOLD=1 keeps serving afterwards, to look at the console on the
//! grown store). Everything is generated deterministically. The machine's load
//! average is printed beside each figure.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{SecondsFormat, Utc};
use harness::postgres::TempPostgres;
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "bench-token-0123456789abcdef";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Latency percentile (ms) of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

/// `rows` transactions straight into the table (two connections in parallel, 1M rows a
/// statement), scored every 250 ms back from `newest`, then VACUUM ANALYZE as autovacuum would.
async fn prefill(store: &store::Store, rows: u64, newest: chrono::DateTime<Utc>) -> Result<()> {
    let t = Instant::now();
    let client = store.pool().get().await?;
    let oldest = newest - chrono::Duration::milliseconds((rows * 250) as i64);
    client
        .query(
            "SELECT sfe_transaction_partition(d::date) \
             FROM generate_series($1::timestamptz AT TIME ZONE 'UTC', $2::timestamptz AT TIME ZONE 'UTC', '1 day') d",
            &[&oldest, &(newest + chrono::Duration::days(1))],
        )
        .await?;
    const CHUNK: u64 = 1_000_000;
    let chunks: Vec<(i64, i64)> = (0..rows.div_ceil(CHUNK))
        .map(|c| ((c * CHUNK + 1) as i64, ((c + 1) * CHUNK).min(rows) as i64))
        .collect();
    let next = std::sync::Arc::new(std::sync::Mutex::new(chunks.into_iter()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let pool = store.pool().clone();
            let next = next.clone();
            tokio::spawn(async move {
                let client = pool.get().await?;
                loop {
                    let Some((lo, hi)) = next.lock().unwrap().next() else { break };
                    client
                        .execute(
                            "INSERT INTO transactions (id, features, amount, hour, day_of_week, \
                               merchant_category, transaction_type, anomaly_score, risk_score, \
                               is_anomaly, confidence, explanation, model_version, edge_instance, \
                               region, scored_at, decision, decision_reason, rules_matched, entities) \
                             SELECT md5('prefill' || g)::uuid, \
                               jsonb_build_object('amount', a, 'hour', g % 24, 'day_of_week', g % 7, \
                                 'merchant_category', g % 10, 'transaction_type', g % 3), \
                               a, g % 24, g % 7, g % 10, g % 3, 0.1 - (g % 100) / 500.0, 0.4, \
                               g % 10 = 0, 0.1, \
                               '{\"amount\": 0.3, \"hour\": -0.1, \"day_of_week\": 0.02, \"merchant_category\": -0.01, \"transaction_type\": 0.0}'::jsonb, \
                               'if1-a1423274', 'edge-' || (g % 7), 'eu-west', \
                               $3::timestamptz - g * interval '250 milliseconds', \
                               CASE WHEN g % 50 = 0 THEN 'review' WHEN g % 500 = 7 THEN 'block' \
                                    ELSE 'allow' END, \
                               CASE WHEN g % 500 = 7 THEN 'rule blocked_card' WHEN g % 50 = 0 \
                                    THEN 'model: anomalous' END, \
                               CASE WHEN g % 500 = 7 THEN '[\"blocked_card\"]'::jsonb END, \
                               jsonb_build_object('card_id', 'card-' || (g % 1000003)) \
                             FROM (SELECT g, 10 + (g % 1000) * 1.25 AS a \
                                   FROM generate_series($1::int8, $2::int8) g) s",
                            &[&lo, &hi, &newest],
                        )
                        .await?;
                    eprintln!("prefill: rows {lo}..={hi} written ({:.0} s)", t.elapsed().as_secs_f64());
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    client
        .batch_execute("VACUUM (ANALYZE) transactions")
        .await?;
    println!(
        "prefill: {rows} rows over {} day partitions in {:.0} s (incl. VACUUM ANALYZE), load {}",
        client
            .query_one(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'transactions'::regclass",
                &[]
            )
            .await?
            .get::<_, i64>(0),
        t.elapsed().as_secs_f64(),
        load()
    );
    Ok(())
}

/// Listing latency: `samples` sequential GETs of `path` (fresh figures, no warm-up beyond the
/// first request being counted too).
async fn time_listing(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    samples: usize,
) -> Result<Vec<Duration>> {
    let mut out = time_listing_in_order(http, base, path, samples).await?;
    out.sort();
    Ok(out)
}

/// Like [`time_listing`], in the order the requests were made (not sorted).
async fn time_listing_in_order(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    samples: usize,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        ensure!(r.status().is_success(), "{path}: status {}", r.status());
        let body: Value = r.json().await?;
        ensure!(
            body["transactions"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{path}: empty page"
        );
        out.push(t.elapsed());
    }
    Ok(out)
}

/// The listing's two statements before keyset pagination, on the same table.
async fn time_old_listing(
    store: &store::Store,
    offset: i64,
    samples: usize,
) -> Result<Vec<Duration>> {
    let client = store.pool().get().await?;
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        client
            .query_one("SELECT count(*) FROM transactions", &[])
            .await?;
        let rows = client
            .query(
                "SELECT t.id, t.amount, t.hour, t.day_of_week, t.merchant_category, t.transaction_type, \
                   t.anomaly_score, t.is_anomaly, t.explanation, t.scored_at, t.risk_score, t.confidence, \
                   t.model_version, t.edge_instance, t.region, t.features, f.label, t.legacy_id \
                 FROM transactions t LEFT JOIN feedback f ON f.transaction_id = t.id \
                 ORDER BY t.scored_at DESC, t.id DESC LIMIT 20 OFFSET $1",
                &[&offset],
            )
            .await?;
        ensure!(
            !rows.is_empty(),
            "old listing: empty page at offset {offset}"
        );
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn event(n: u64, base: chrono::DateTime<Utc>) -> Value {
    let scored_at = base + chrono::Duration::milliseconds(n as i64);
    json!({
        "event_id": Uuid::from_u64_pair(0x0190_0000_0000_7000, n), "kind": "scored_transaction",
        "transaction_id": Uuid::from_u64_pair(0x0190_0000_0000_7001, n),
        "scored_at": scored_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "model_version": "if1-a1423274", "edge_instance": format!("edge-{}", n % 7), "region": "eu-west",
        "features": {"amount": 10.0 + (n % 1000) as f64 * 1.25, "hour": n % 24, "day_of_week": n % 7,
                     "merchant_category": n % 10, "transaction_type": n % 3},
        "anomaly_score": 0.1 - (n % 100) as f64 / 500.0, "risk_score": 0.4, "is_anomaly": n.is_multiple_of(10),
        "confidence": 0.1, "explanation": {"amount": 0.3, "hour": -0.1, "day_of_week": 0.02,
                     "merchant_category": -0.01, "transaction_type": 0.0},
    })
}

fn main() -> Result<()> {
    let clients = env("BENCH_CLIENTS", 4);
    let batches = env("BENCH_BATCHES", 150);
    let batch_size = env("BENCH_BATCH_SIZE", 100);
    let pool_size = env("BENCH_POOL", 16);
    let prefill_rows = env("BENCH_PREFILL_ROWS", 0) as u64;
    let deep_page = env("BENCH_DEEP_PAGE", 10_000) as i64;
    let samples = env("BENCH_LIST_SAMPLES", 200);
    let pg = TempPostgres::start().context("starting PostgreSQL")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut config = store::Config::new(pg.url(), TOKEN);
        config.pool_size = pool_size;
        let store = store::Store::new(config)?;
        store.migrate().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let url = format!("{base_url}/v1/events");
        tokio::spawn(store::serve(listener, store.clone(), std::future::pending()));
        if prefill_rows > 0 {
            prefill(&store, prefill_rows, Utc::now() - chrono::Duration::hours(2)).await?;
        }

        // Bodies are built before timing: the figure is the store's, not the generator's.
        let base = Utc::now() - chrono::Duration::hours(1);
        let total_batches = clients * (batches + 1);
        let bodies: Vec<Vec<u8>> = (0..total_batches)
            .map(|b| {
                let events: Vec<Value> =
                    (0..batch_size).map(|i| event((b * batch_size + i) as u64, base)).collect();
                serde_json::to_vec(&events).expect("serializing")
            })
            .collect();
        let bytes: usize = bodies.iter().map(Vec::len).sum();
        let http = reqwest::Client::new();
        let post = move |body: Vec<u8>| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let t = Instant::now();
                let r = http.post(&url).bearer_auth(TOKEN).header("content-type", "application/json")
                    .body(body).send().await?;
                ensure!(r.status().is_success(), "status {}", r.status());
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        };
        let mut bodies = bodies.into_iter();
        // Warm-up: one batch per client (connections, prepared statements).
        for body in bodies.by_ref().take(clients) {
            post(body).await?;
        }
        let per_client: Vec<Vec<Vec<u8>>> =
            (0..clients).map(|_| bodies.by_ref().take(batches).collect()).collect();
        let start = Instant::now();
        let tasks: Vec<_> = per_client
            .into_iter()
            .map(|mine| {
                let post = post.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(mine.len());
                    for body in mine {
                        latencies.push(post(body).await?);
                    }
                    Ok::<_, anyhow::Error>(latencies)
                })
            })
            .collect();
        let mut latencies: Vec<Duration> = Vec::new();
        for t in tasks {
            latencies.extend(t.await??);
        }
        let elapsed = start.elapsed();
        let events = clients * batches * batch_size;
        latencies.sort();
        let stored: usize = pg.psql("SELECT count(*) FROM transactions")?.parse()?;
        ensure!(
            stored == total_batches * batch_size + prefill_rows as usize,
            "stored {stored} rows"
        );
        println!(
            "ingest: {clients} clients x {batches} batches x {batch_size} events = {events} events in {:.2} s",
            elapsed.as_secs_f64()
        );
        println!(
            "ingest: {:.0} events/s, {:.0} batches/s, batch latency p50 {:.1} ms p99 {:.1} ms, {:.1} MiB of JSON",
            events as f64 / elapsed.as_secs_f64(),
            (clients * batches) as f64 / elapsed.as_secs_f64(),
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            bytes as f64 / (1024.0 * 1024.0)
        );
        println!("ingest: {stored} rows in the table afterwards, load {}", load());

        // Listing: page 1 and a deep page, by number and by cursor, after and before.
        let http = reqwest::Client::new();
        let deep_offset = (deep_page - 1) * 20;
        let cursor = {
            let client = store.pool().get().await?;
            client
                .query_opt(
                    "SELECT scored_at, id FROM transactions ORDER BY scored_at DESC, id DESC \
                     LIMIT 1 OFFSET $1",
                    &[&(deep_offset - 1)],
                )
                .await?
                .map(|r| {
                    let at: chrono::DateTime<Utc> = r.get(0);
                    contract::reads::ListingCursor { scored_at_micros: at.timestamp_micros(), id: r.get(1) }
                })
        };
        let report = |what: &str, lat: &[Duration]| {
            println!(
                "listing: {what:<44} p50 {:>8.2} ms  p99 {:>8.2} ms  ({} samples, load {})",
                pct(lat, 0.5),
                pct(lat, 0.99),
                lat.len(),
                load()
            );
        };
        report("page 1 (page number)", &time_listing(&http, &base_url, "/v1/transactions?page=1", samples).await?);
        report(
            &format!("page {deep_page} (page number, deferred OFFSET)"),
            &time_listing(&http, &base_url, &format!("/v1/transactions?page={deep_page}"), samples).await?,
        );
        match cursor {
            Some(c) => report(
                &format!("page {deep_page} (keyset cursor)"),
                &time_listing(&http, &base_url, &format!("/v1/transactions?cursor={c}"), samples).await?,
            ),
            None => println!("listing: fewer than {deep_page} pages; no deep cursor"),
        }
        let old_samples = (samples / 10).max(5);
        report("before: page 1 (count(*) + OFFSET, SQL only)", &time_old_listing(&store, 0, old_samples).await?);
        if cursor.is_some() {
            report(
                &format!("before: page {deep_page} (count(*) + OFFSET, SQL only)"),
                &time_old_listing(&store, deep_offset, old_samples).await?,
            );
        }

        // The review queue (2 % review, 0.2 % block in the prefill) as the console asks for it:
        // the API call of each view, then the whole page as a browser loads it (page, script,
        // style, who am I, first page of the queue), sequentially.
        let review = [
            ("queue: review, newest first", "/v1/review?per_page=50&labelled=no".to_string()),
            ("queue: review+block, riskiest first", "/v1/review?per_page=50&decision=review,block&order=riskiest".to_string()),
            ("queue: block, rule filter", "/v1/review?per_page=50&decision=block&rule=blocked_card".to_string()),
        ];
        for (what, path) in &review {
            let lat = time_listing_in_order(&http, &base_url, path, samples).await?;
            let first: Vec<String> = lat.iter().take(8).map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).collect();
            let mut sorted = lat.clone();
            sorted.sort();
            report(what, &sorted);
            println!("listing:   its first 8 requests in order (ms): {}", first.join(" "));
        }
        if std::env::var_os("BENCH_EXPLAIN").is_some() {
            // The statement the rule filter runs (store::review's shape and settings).
            let plan = pg.psql(
                "SET enable_sort = off; SET jit = off; EXPLAIN (ANALYZE, BUFFERS) SELECT t.id FROM transactions t \
                 LEFT JOIN feedback f ON f.transaction_id = t.id \
                 WHERE t.decision IN ('review', 'block') AND t.decision = ANY('{block}'::text[]) \
                   AND t.rules_matched ? 'blocked_card' \
                 ORDER BY t.scored_at DESC, t.id DESC LIMIT 51",
            )?;
            println!("explain: queue, block, rule filter\n{plan}");
        }
        let deep = {
            let mut cursor: Option<String> = None;
            for _ in 0..(deep_page / 50).clamp(1, 200) {
                let mut path = "/v1/review?per_page=50".to_string();
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page: Value = http.get(format!("{base_url}{path}")).bearer_auth(TOKEN).send().await?.json().await?;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            cursor
        };
        if let Some(c) = deep {
            report("queue: a deep page (keyset cursor)", &time_listing(&http, &base_url, &format!("/v1/review?per_page=50&cursor={c}"), samples).await?);
        }
        let mut page_loads = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            for path in ["/console/", "/console/console.js", "/console/console.css", "/v1/whoami", "/v1/review?per_page=50&labelled=no&decision=review&order=newest"] {
                let r = http.get(format!("{base_url}{path}")).bearer_auth(TOKEN).send().await?;
                ensure!(r.status().is_success(), "{path}: {}", r.status());
                r.bytes().await?;
            }
            page_loads.push(t.elapsed());
        }
        page_loads.sort();
        report("console: queue page (5 requests in a row)", &page_loads);
        if std::env::var_os("BENCH_HOLD").is_some() {
            // To look at the console on the grown store: serve until the process is stopped.
            println!("holding: {base_url}/console/ (token {TOKEN}); stop with Ctrl-C");
            std::future::pending::<()>().await;
        }
        Ok(())
    })
}
