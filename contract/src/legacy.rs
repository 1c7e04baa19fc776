//! The legacy SecureFlow schema as the store keeps it: the five feature columns and the rule
//! that turns analyst feedback into a training label.

/// The legacy features, in model order (model-format's list: one definition). The store copies
/// them into columns of their own and puts them first in exports.
pub const LEGACY_FEATURES: [&str; 5] = model_format::normalize::LEGACY_FEATURES;

/// The training label: true when the transaction is fraudulent/anomalous according to the
/// analyst. Legacy feedback says whether the model's decision was right (`true` = correct,
/// which is why the dashboard's accuracy is the share of `true`), so the transaction is
/// anomalous exactly when the model flagged it and was right, or did not flag it and was wrong.
pub fn label(is_anomaly: bool, feedback: bool) -> bool {
    is_anomaly == feedback
}

/// [`label`] as a SQL expression giving 1 or 0, over two boolean SQL expressions (column
/// names), for readers that compute it in the database.
pub fn label_sql(is_anomaly: &str, feedback: &str) -> String {
    format!("CASE WHEN {is_anomaly} = {feedback} THEN 1 ELSE 0 END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_truth_table() {
        assert!(label(true, true));
        assert!(!label(true, false));
        assert!(!label(false, true));
        assert!(label(false, false));
        assert_eq!(label_sql("a", "b"), "CASE WHEN a = b THEN 1 ELSE 0 END");
    }
}
