//! Ingest throughput: a throwaway PostgreSQL, the store served in-process on loopback, and a few
//! concurrent HTTP clients posting batches of scored-transaction events. Prints events/s.
//!
//! `cargo bench -p store --bench ingest` (env: BENCH_CLIENTS=4, BENCH_BATCHES=150 per client,
//! BENCH_BATCH_SIZE=100, BENCH_POOL=16). The events are generated deterministically.

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
        let url = format!("http://{}/v1/events", listener.local_addr()?);
        tokio::spawn(store::serve(listener, store, std::future::pending()));

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
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        let stored: usize = pg.psql("SELECT count(*) FROM transactions")?.parse()?;
        ensure!(stored == total_batches * batch_size, "stored {stored} rows");
        println!(
            "ingest: {clients} clients x {batches} batches x {batch_size} events = {events} events in {:.2} s",
            elapsed.as_secs_f64()
        );
        println!(
            "ingest: {:.0} events/s, {:.0} batches/s, batch latency p50 {:.1} ms p99 {:.1} ms, {:.1} MiB of JSON",
            events as f64 / elapsed.as_secs_f64(),
            (clients * batches) as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            bytes as f64 / (1024.0 * 1024.0)
        );
        Ok(())
    })
}
