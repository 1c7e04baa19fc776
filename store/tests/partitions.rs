//! The day partitions of `transactions` against a real PostgreSQL: created ahead, created on
//! demand for late events, dropped by retention, recreated when another process dropped one,
//! and the migration that partitions an existing table keeps its rows.

mod common;

use chrono::{Days, Duration, Utc};
use common::*;

fn partitions(t: &TestStore) -> Vec<String> {
    let list =
        t.pg.psql(
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'transactions'::regclass",
        )
        .unwrap();
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn name(day: chrono::NaiveDate) -> String {
    format!("transactions_p{}", day.format("%Y%m%d"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead_on_demand_and_dropped_by_retention() {
    let t = TestStore::start_with(|c| {
        c.retention_days = Some(30);
        c.partitions_ahead_days = 3;
    })
    .await;
    let now = Utc::now();
    let today = now.date_naive();
    let done = t.store.maintain_partitions().await.unwrap();
    let ahead: Vec<_> = (0..=4)
        .map(|d| today.pred_opt().unwrap() + Days::new(d))
        .collect();
    assert_eq!(done.ensured, ahead);
    let before = partitions(&t);
    for day in &ahead {
        assert!(before.contains(&name(*day)), "{before:?} lacks {day}");
    }

    // Late events (an outbox that was offline for weeks) get their day's partition at ingest.
    let mut batch = Vec::new();
    for (n, days_ago) in [(1u128, 40i64), (2, 31), (3, 29), (4, 0)] {
        let mut e = scored(n, now);
        e["scored_at"] = ts(now - Duration::days(days_ago)).into();
        batch.push(e);
    }
    assert_eq!(t.post_events(&batch).await.0, 200);
    assert_eq!(t.count("transactions"), 4);
    let day = |ago: u64| today - Days::new(ago);
    let with_late = partitions(&t);
    for ago in [40, 31, 29] {
        assert!(with_late.contains(&name(day(ago))), "{with_late:?}");
    }

    // Retention of 30 days: partitions of days before today − 30 go, with their rows.
    let done = t.store.maintain_partitions().await.unwrap();
    assert_eq!(done.dropped, vec![name(day(40)), name(day(31))]);
    assert_eq!(t.count("transactions"), 2);
    let (_, listing) = t.get_json("/v1/transactions").await;
    assert_eq!(
        listed_ids(&listing),
        vec![tx_id(4).to_string(), tx_id(3).to_string()]
    );
    assert_eq!(listing["pagination"]["total"], 2);
    let after = partitions(&t);
    assert!(!after.contains(&name(day(40))) && after.contains(&name(day(29))));
    let (_, metrics) = t.get_text("/metrics").await;
    assert!(
        metrics.contains("store_partitions_dropped_total 2"),
        "{metrics}"
    );
    // A second pass has nothing left to drop.
    assert!(
        t.store
            .maintain_partitions()
            .await
            .unwrap()
            .dropped
            .is_empty()
    );

    // Another store process (or an operator) dropped today's partition behind this one's back:
    // the insert finds no partition, the store recreates it and the batch lands.
    t.pg.psql(&format!("DROP TABLE {}", name(today))).unwrap();
    assert_eq!(t.count("transactions"), 1);
    assert_eq!(t.post_events(&[scored(5, now)]).await.0, 200);
    assert_eq!(t.count("transactions"), 2);
    assert!(partitions(&t).contains(&name(today)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioning_an_existing_table_keeps_its_rows() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    // The schema as it was before migration 4, with rows in it.
    let mut sql = String::from(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now());",
    );
    for (version, name, text) in store::db::MIGRATIONS.iter().filter(|m| m.0 < 4) {
        sql.push_str(text);
        sql.push_str(&format!(
            ";INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}');"
        ));
    }
    sql.push_str(
        "INSERT INTO transactions (id, features, amount, anomaly_score, risk_score, is_anomaly, \
           confidence, model_version, scored_at, legacy_id) \
         SELECT ('0190000000007000a000' || lpad(g::text, 12, '0'))::uuid, \
           jsonb_build_object('amount', g), g, 0.1, 0.3, g % 2 = 0, 0.1, 'if1-old', \
           now() - g * interval '1 day', g \
         FROM generate_series(1, 5) g;",
    );
    pg.psql(&sql).unwrap();
    let store = store::Store::new(store::Config::new(pg.url(), TOKEN)).unwrap();
    assert_eq!(
        store.migrate().await.unwrap(),
        store::db::MIGRATIONS.len() - 3
    );
    let t = TestStore::serve(pg, store).await;
    assert_eq!(t.count("transactions"), 5);
    let parts = partitions(&t);
    for g in 1..=5u64 {
        let day = (Utc::now() - Duration::days(g as i64)).date_naive();
        assert!(parts.contains(&name(day)), "{parts:?}");
    }
    let (_, listing) = t.get_json("/v1/transactions").await;
    assert_eq!(listing["transactions"][0]["amount"], 1.0);
    assert_eq!(listing["transactions"][4]["legacy_id"], 5);
    // Ingest into the partitioned table works with the old rows in place.
    assert_eq!(t.post_events(&[scored(1, Utc::now())]).await.0, 200);
    assert_eq!(t.count("transactions"), 6);
}
