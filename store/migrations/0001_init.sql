-- Initial schema of the central store. Applied once (recorded in schema_migrations).

-- One row per transaction scored at the edge. `id` is the edge-generated UUIDv7.
CREATE TABLE transactions (
    id                uuid PRIMARY KEY,
    features          jsonb NOT NULL,
    -- The legacy five, copied out of `features` when present (the legacy API and dashboard read them).
    amount            double precision,
    hour              double precision,
    day_of_week       double precision,
    merchant_category double precision,
    transaction_type  double precision,
    anomaly_score     double precision NOT NULL,
    risk_score        double precision NOT NULL,
    is_anomaly        boolean NOT NULL,
    confidence        double precision NOT NULL,
    explanation       jsonb,
    model_version     text NOT NULL,
    edge_instance     text,
    region            text,
    scored_at         timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now()
);
-- Dashboard window scans (scored_at range) and the newest-first listing (scored_at desc, id desc).
CREATE INDEX transactions_scored_at_id_idx ON transactions (scored_at DESC, id DESC);

-- The current analyst feedback per transaction. No foreign key: feedback may arrive before the
-- scored transaction it refers to (edge events are not ordered); readers join.
CREATE TABLE feedback (
    transaction_id uuid PRIMARY KEY,
    label          boolean NOT NULL,
    comments       text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_event_id  uuid NOT NULL
);

CREATE TABLE model_versions (
    model_version text PRIMARY KEY,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL
);

-- Every event id ever accepted: makes ingest idempotent across redeliveries.
CREATE TABLE ingested_events (
    event_id    uuid PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
