//! StandardScaler parameters with scikit-learn's semantics.

use crate::error::InvalidModel;

/// Per-feature `(x - mean) / scale`, exactly as scikit-learn's `StandardScaler.transform`.
///
/// `scale` is the population standard deviation (ddof = 0), or 1 for a constant feature, so
/// scaling never divides by zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Scaler {
    /// Checks that both vectors have the same length, every value is finite and every scale is
    /// strictly positive.
    pub fn new(mean: Vec<f64>, scale: Vec<f64>) -> Result<Self, InvalidModel> {
        if mean.len() != scale.len() {
            return Err(InvalidModel::ScalerShape {
                mean: mean.len(),
                scale: scale.len(),
            });
        }
        for (i, (&m, &s)) in mean.iter().zip(&scale).enumerate() {
            if !m.is_finite() || !s.is_finite() || s <= 0.0 {
                return Err(InvalidModel::ScalerValue {
                    index: i,
                    mean: m,
                    scale: s,
                });
            }
        }
        Ok(Scaler { mean, scale })
    }

    /// A scaler that leaves values unchanged (mean 0, scale 1).
    pub fn identity(width: usize) -> Self {
        Scaler {
            mean: vec![0.0; width],
            scale: vec![1.0; width],
        }
    }

    pub fn len(&self) -> usize {
        self.mean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    pub fn scale(&self) -> &[f64] {
        &self.scale
    }

    /// Scales feature `index`. Trainer and worker both go through this one expression.
    #[inline]
    pub fn scale_one(&self, index: usize, value: f64) -> f64 {
        (value - self.mean[index]) / self.scale[index]
    }
}
