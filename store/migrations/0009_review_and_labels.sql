-- The analyst console: who labelled, why the edge decided, what the answer said, whose it was,
-- and the indexes of the review queue.

-- The token name of the analyst who made the label in the console (POST /v1/labels). NULL for
-- feedback sent through an edge's /api/feedback: the caller there is an app, not a person.
ALTER TABLE feedback ADD COLUMN labelled_by text;

-- Why the edge decided so, every rule that matched (a JSON array of names) and the answer's
-- risk factors (explained predictions). Nullable: older edges send none.
ALTER TABLE transactions ADD COLUMN decision_reason text;
ALTER TABLE transactions ADD COLUMN rules_matched jsonb;
ALTER TABLE transactions ADD COLUMN risk_factors jsonb;

-- The entity ids the payload named (card_id, customer_id, device_id, ip, merchant_id → id), so
-- that an analyst sees whose transaction it is and the card's other transactions (the index).
ALTER TABLE transactions ADD COLUMN entities jsonb;
CREATE INDEX transactions_card_idx ON transactions ((entities ->> 'card_id'), scored_at DESC)
    WHERE entities ? 'card_id';

-- The review queue reads only what the edge sent to people (a few per cent of the traffic):
-- newest first, or riskiest first (the probability of fraud where the model has one, else the
-- forest's risk score). Partial indexes keep both small on a table of any size.
CREATE INDEX transactions_review_newest_idx ON transactions (scored_at DESC, id DESC)
    WHERE decision IN ('review', 'block');
CREATE INDEX transactions_review_riskiest_idx
    ON transactions ((COALESCE(fraud_probability, risk_score)) DESC, scored_at DESC, id DESC)
    WHERE decision IN ('review', 'block');
