-- `transactions` becomes a table partitioned by UTC day of `scored_at` (declarative range
-- partitioning), so old days are dropped whole by the retention setting instead of deleted row
-- by row, and time-bounded reads (dashboard window, listing, export, drift) touch only the
-- days they ask for. Existing rows are copied over once, here.
--
-- A partitioned table's primary key must contain the partition key: it is (id, scored_at). A
-- transaction id sent again with the same scored_at keeps its first row (ingest's ON CONFLICT);
-- redeliveries never get that far, they are deduplicated by event id in `ingested_events`.

ALTER TABLE transactions RENAME TO transactions_unpartitioned;
ALTER INDEX transactions_pkey RENAME TO transactions_unpartitioned_pkey;
ALTER INDEX transactions_scored_at_id_idx RENAME TO transactions_unpartitioned_scored_at_id_idx;
ALTER INDEX transactions_legacy_id_idx RENAME TO transactions_unpartitioned_legacy_id_idx;
ALTER INDEX transactions_shadow_pair_idx RENAME TO transactions_unpartitioned_shadow_pair_idx;

CREATE TABLE transactions (LIKE transactions_unpartitioned INCLUDING DEFAULTS)
    PARTITION BY RANGE (scored_at);
ALTER TABLE transactions ADD PRIMARY KEY (id, scored_at);
CREATE INDEX transactions_scored_at_id_idx ON transactions (scored_at DESC, id DESC);
CREATE INDEX transactions_legacy_id_idx ON transactions (legacy_id, scored_at DESC)
    WHERE legacy_id IS NOT NULL;
CREATE INDEX transactions_shadow_pair_idx ON transactions (model_version, shadow_model_version)
    WHERE shadow_model_version IS NOT NULL;

-- The one definition of a partition: its name and bounds for a UTC day. The store calls it for
-- the days ahead, and at ingest for any day a batch needs that does not exist yet (late events
-- from an edge's outbox, clock skew). Idempotent, and safe when store processes race (lock).
CREATE FUNCTION sfe_transaction_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'transactions_p' || to_char(day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sfe_transaction_partitions'));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF transactions FOR VALUES FROM (%L) TO (%L)',
            name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN name;
END $$;

-- Retention: drops every day partition wholly before `cutoff` (a UTC day), returns their names.
CREATE FUNCTION sfe_drop_transaction_partitions_before(cutoff date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sfe_transaction_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'transactions'::regclass
          AND c.relname ~ '^transactions_p[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END $$;

DO $$
DECLARE
    day date;
BEGIN
    FOR day IN
        SELECT DISTINCT (scored_at AT TIME ZONE 'UTC')::date FROM transactions_unpartitioned
    LOOP
        PERFORM sfe_transaction_partition(day);
    END LOOP;
END $$;
INSERT INTO transactions SELECT * FROM transactions_unpartitioned;
DROP TABLE transactions_unpartitioned;
