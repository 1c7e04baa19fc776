-- The model registry (contract::models): uploaded files, the two channels edges follow, and
-- every channel change (so a rollback is one call and the history says who/when/from/to).

-- A version may be known from forwarded events before (or without) an upload.
ALTER TABLE model_versions ALTER COLUMN first_seen DROP NOT NULL;
ALTER TABLE model_versions ALTER COLUMN last_seen DROP NOT NULL;

CREATE TABLE model_files (
    model_version text PRIMARY KEY REFERENCES model_versions (model_version),
    checksum      text NOT NULL,
    bytes         bytea NOT NULL,
    features      jsonb NOT NULL,
    metadata      jsonb NOT NULL,
    -- The file's training score distribution (model-format SDST), for drift; NULL without one.
    score_quantiles float8[],
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    uploaded_by   text NOT NULL
);

CREATE TABLE model_channels (
    channel       text PRIMARY KEY CHECK (channel IN ('live', 'shadow')),
    model_version text REFERENCES model_files (model_version),
    changed_at    timestamptz
);
INSERT INTO model_channels (channel) VALUES ('live'), ('shadow');

CREATE TABLE model_channel_changes (
    id           bigserial PRIMARY KEY,
    channel      text NOT NULL REFERENCES model_channels (channel),
    from_version text,
    to_version   text,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    changed_by   text NOT NULL,
    action       text NOT NULL CHECK (action IN ('set', 'rollback'))
);

-- Shadow scoring: the shadow model's verdict on each transaction, when the edge had one set.
ALTER TABLE transactions
    ADD COLUMN shadow_model_version text,
    ADD COLUMN shadow_anomaly_score double precision,
    ADD COLUMN shadow_is_anomaly boolean;
CREATE INDEX transactions_shadow_pair_idx ON transactions (model_version, shadow_model_version)
    WHERE shadow_model_version IS NOT NULL;
