//! Values the host supplies for the variables a policy names.

/// The value of one variable for one transaction. Borrowed, so building a row allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Operand<'a> {
    /// A number (payload amount, a model feature, a velocity count, a score).
    Number(f64),
    /// Text (card id, merchant, country). Compared after trimming and ASCII-lowercasing.
    Text(&'a str),
    /// A flag such as `is_anomaly`.
    Bool(bool),
    /// The transaction has no value for this variable. Never makes a comparison or membership
    /// test true.
    #[default]
    Missing,
}

impl From<f64> for Operand<'_> {
    fn from(v: f64) -> Self {
        Operand::Number(v)
    }
}

impl From<bool> for Operand<'_> {
    fn from(v: bool) -> Self {
        Operand::Bool(v)
    }
}

impl<'a> From<&'a str> for Operand<'a> {
    fn from(v: &'a str) -> Self {
        Operand::Text(v)
    }
}

impl<'a, T: Into<Operand<'a>>> From<Option<T>> for Operand<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Operand::Missing, Into::into)
    }
}
