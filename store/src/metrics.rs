//! Prometheus metrics. Each [`crate::Store`] owns its registry (no process-wide state), so
//! several stores in one test process do not share counters.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounterVec,
    pub events_duplicate: IntCounterVec,
    pub batch_size: prometheus::Histogram,
    pub errors: IntCounterVec,
    pub request_duration: HistogramVec,
    /// PSI of the last hour's scores against the training distribution, per channel's model.
    pub model_psi: GaugeVec,
    /// Alert rate of the last hour, per channel's model.
    pub model_alert_rate: GaugeVec,
    /// Transaction partitions dropped by retention.
    pub partitions_dropped: prometheus::IntCounter,
    /// Partition maintenance passes completed.
    pub partitions_maintained: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_ingested = IntCounterVec::new(
            Opts::new(
                "store_events_ingested_total",
                "Events written for the first time, by kind.",
            ),
            &["kind"],
        )?;
        let events_duplicate = IntCounterVec::new(
            Opts::new(
                "store_events_duplicate_total",
                "Events skipped because their event_id was already ingested, by kind.",
            ),
            &["kind"],
        )?;
        let batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "store_ingest_batch_events",
                "Events per accepted POST /v1/events batch.",
            )
            .buckets(vec![
                1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ]),
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "store_errors_total",
                "Requests that failed, by kind of error.",
            ),
            &["kind"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "store_http_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route", "status"],
        )?;
        let model_psi = GaugeVec::new(
            Opts::new(
                "store_model_score_psi",
                "Population stability index of the last hour's scores against the model's training score distribution (live and shadow channel models).",
            ),
            &["model_version", "channel"],
        )?;
        let model_alert_rate = GaugeVec::new(
            Opts::new(
                "store_model_alert_rate",
                "Share of the last hour's transactions flagged anomalous (live and shadow channel models).",
            ),
            &["model_version", "channel"],
        )?;
        let partitions_dropped = prometheus::IntCounter::new(
            "store_partitions_dropped_total",
            "Day partitions of transactions dropped by the retention setting.",
        )?;
        let partitions_maintained = prometheus::IntCounter::new(
            "store_partition_maintenance_total",
            "Partition maintenance passes completed (days ahead created, retention applied).",
        )?;
        registry.register(Box::new(partitions_dropped.clone()))?;
        registry.register(Box::new(partitions_maintained.clone()))?;
        registry.register(Box::new(model_psi.clone()))?;
        registry.register(Box::new(model_alert_rate.clone()))?;
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(events_duplicate.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        // Make the per-kind series visible at zero before the first event.
        for kind in ["scored_transaction", "feedback"] {
            events_ingested.with_label_values(&[kind]);
            events_duplicate.with_label_values(&[kind]);
        }
        Ok(Metrics {
            registry,
            events_ingested,
            events_duplicate,
            batch_size,
            errors,
            request_duration,
            model_psi,
            model_alert_rate,
            partitions_dropped,
            partitions_maintained,
        })
    }

    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
