-- The shadow model's probability of fraud and the decision it would have made by itself, so
-- that a candidate with a supervised classifier is compared on what an analyst would see
-- (review and block rates), not only on anomaly scores. Nullable: older edges send neither.
ALTER TABLE transactions ADD COLUMN shadow_fraud_probability double precision;
ALTER TABLE transactions ADD COLUMN shadow_decision text;
