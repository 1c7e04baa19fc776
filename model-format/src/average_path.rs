// `c(n)`, shared by the crate and its build script (which tabulates it for small n): one
// definition, so the table and the direct computation cannot drift apart.

/// Euler–Mascheroni constant, as `numpy.euler_gamma`.
pub(crate) const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// scikit-learn's `_average_path_length`: 0 for n ≤ 1, 1 for n = 2, otherwise
/// `2(ln(n-1) + γ) - 2(n-1)/n`. `libm`'s logarithm, so the bits are the same on every target.
pub(crate) fn c_direct(n: u32) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = f64::from(n);
            2.0 * (libm::log(n - 1.0) + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}
