-- Legacy integer transaction ids (contract::legacy_id): legacy clients display them and send
-- feedback by them. Not unique: ids are drawn at the edge without coordination, so two
-- transactions may (rarely) share one; feedback goes to the newest.
ALTER TABLE transactions ADD COLUMN legacy_id bigint;
CREATE INDEX transactions_legacy_id_idx ON transactions (legacy_id, scored_at DESC)
    WHERE legacy_id IS NOT NULL;

-- Feedback by legacy id whose transaction has not arrived yet (edge events are not ordered).
-- Moved into `feedback` when a transaction with that legacy id is ingested.
CREATE TABLE pending_legacy_feedback (
    legacy_id     bigint PRIMARY KEY,
    label         boolean NOT NULL,
    comments      text,
    created_at    timestamptz NOT NULL,
    last_event_id uuid NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
