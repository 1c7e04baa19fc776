-- The transaction's own time (its payload's timestamp), when the edge could read one. Velocity
-- features are computed at that instant (else at the edge's clock, ~ scored_at), so the trainer
-- recomputes them from the store's rows at the same instants. Nullable: older edges send none.
ALTER TABLE transactions ADD COLUMN transaction_time timestamptz;
