-- What the edge decided and, for models with a supervised classifier, its probability of
-- fraud: kept beside the scores so that reviews, labels and the next training can use them.
-- Nullable: edges that predate them (and forest-only models) send none.
ALTER TABLE transactions ADD COLUMN decision text;
ALTER TABLE transactions ADD COLUMN fraud_probability double precision;
