//! The review budget: the supervised model's review band, held to the share of traffic the
//! operator can staff.
//!
//! Why: the trainer picks the review threshold so that `review_rate` of the *validation
//! window's* traffic lands in the band. When the traffic shifts (an attack wave, a fraud ring
//! that finds the merchant), a fixed threshold sends far more: at 6 % fraud against 1 % in
//! training, a 0.5 % budget became 1.2 % of traffic in review. A team sized for the budget then
//! works a queue it cannot finish.
//!
//! How: the probabilities of recent traffic (a window of the last `window` transactions, kept as
//! two halves: the filling one and the one before) are counted in fixed bins on the log-odds.
//! The review threshold in force is the stored one, raised to the lowest bin edge above which at
//! most `rate · max(n, window / 2)` of those transactions would have been reviewed: the band
//! keeps the *most likely* fraud of the moment. Because that threshold follows the traffic, it
//! lags a rising wave (what it let through before it rose was reviewed at the lower one), so the
//! window also counts the reviews made, and once they reach the budget nothing more is reviewed
//! until older ones leave the window: never more than the budget of the traffic the window saw
//! (and at most `rate · window / 2` reviews before a half-window has passed). Blocks are not
//! reviews and are not capped; neither are rules that say `review` (the operator's own).
//!
//! Only probabilities inside the stored band are binned: below it nothing is reviewed anyway, at
//! or above the block threshold it is blocked. The window is a count of transactions, not a
//! time, so the trainer's backtest replays exactly what one edge would decide; several edge
//! instances share one window through the key-value store ([`BudgetWindow::encode`]).

use crate::booster::{Thresholds, Verdict};

/// Bins on the log-odds, each [`BIN_WIDTH`] wide from [`LOWEST_LOG_ODDS`].
pub const BINS: usize = 192;
/// Lower edge of bin 0 (p ≈ 6.1e-6); lower values fall in bin 0.
pub const LOWEST_LOG_ODDS: f64 = -12.0;
/// Width of one bin in log-odds (p 0.50 → 0.53).
pub const BIN_WIDTH: f64 = 0.125;
/// Transactions in a window when the model does not say (`review_window` in its metadata).
pub const DEFAULT_WINDOW: u64 = 20_000;

const MAGIC: [u8; 4] = *b"RVB1";

/// A supervised model's budget: its stored thresholds, the share of traffic it may review and
/// over how many transactions that share is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReviewBudget {
    pub(crate) thresholds: Thresholds,
    pub(crate) rate: f64,
    pub(crate) window: u64,
}

/// Counts of recent traffic: transactions seen, those the model sent to review and, per bin,
/// those inside the stored review band; `[0]` is the half-window filling now, `[1]` the one
/// before it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetWindow {
    pub(crate) seen: [u64; 2],
    pub(crate) reviewed: [u64; 2],
    pub(crate) bins: [[u32; BINS]; 2],
}

impl Default for BudgetWindow {
    fn default() -> Self {
        BudgetWindow {
            seen: [0; 2],
            reviewed: [0; 2],
            bins: [[0; BINS]; 2],
        }
    }
}

/// Why stored window bytes were not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("review budget window: {0}")]
pub struct WindowError(&'static str);

/// The bin of `p`: the last whose [`lower_edge`] is at most `p` (0 below them all). Decided on
/// the edges themselves, so a threshold at an edge splits the bins exactly where they split.
fn bin_of(p: f64) -> usize {
    let log_odds = libm::log(p) - libm::log1p(-p);
    let guess = ((log_odds - LOWEST_LOG_ODDS) / BIN_WIDTH).floor();
    let mut i = if guess.is_nan() || guess < 0.0 {
        0
    } else {
        (guess as usize).min(BINS - 1)
    };
    while i > 0 && p < lower_edge(i) {
        i -= 1;
    }
    while i + 1 < BINS && p >= lower_edge(i + 1) {
        i += 1;
    }
    i
}

/// The probability at the lower edge of bin `i`.
fn lower_edge(i: usize) -> f64 {
    let log_odds = LOWEST_LOG_ODDS + i as f64 * BIN_WIDTH;
    1.0 / (1.0 + libm::exp(-log_odds))
}

impl ReviewBudget {
    /// The budget of a model whose supervised classifier has `thresholds`, reviewing at most
    /// `rate` of the traffic counted over `window` transactions. `None` when there is nothing to
    /// hold: no review threshold, a rate outside (0, 1), or a window under 2.
    pub fn new(thresholds: Thresholds, rate: f64, window: u64) -> Option<Self> {
        (thresholds.review.is_some() && rate > 0.0 && rate < 1.0 && window >= 2).then_some(
            ReviewBudget {
                thresholds,
                rate,
                window,
            },
        )
    }

    /// The budget `model` was trained for: its supervised thresholds, its metadata's
    /// `review_rate` (written by `trainer fit`) and `review_window` (else [`DEFAULT_WINDOW`]).
    pub fn of(model: &crate::Model) -> Option<Self> {
        let b = model.supervised()?;
        let rate = model.meta("review_rate")?.parse().ok()?;
        let window = model
            .meta("review_window")
            .map_or(Some(DEFAULT_WINDOW), |w| w.parse().ok())?;
        Self::new(b.thresholds(), rate, window)
    }

    /// The verdict for `p` under `in_force` (from [`ReviewBudget::thresholds`]):
    /// [`Verdict::OverBudget`] where the stored thresholds alone would have said review.
    pub fn verdict(&self, in_force: &Thresholds, p: f64) -> Verdict {
        match in_force.verdict(p) {
            Verdict::Allow if self.thresholds.verdict(p) == Verdict::Review => Verdict::OverBudget,
            v => v,
        }
    }

    /// The share of traffic it may review.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Transactions the share is counted over.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The verdict for probability `p` by the thresholds in force after `shared` (another
    /// window, e.g. the one several instances share) and `own`, then counted in `own`.
    pub fn decide(&self, shared: Option<&BudgetWindow>, own: &mut BudgetWindow, p: f64) -> Verdict {
        let in_force = match shared {
            Some(s) => self.thresholds(&[s, own]),
            None => self.thresholds(&[own]),
        };
        let v = self.verdict(&in_force, p);
        self.observe(own, p, v);
        v
    }

    /// Counts one transaction's probability and the verdict it got in `w` (its filling half; a
    /// full half moves back and a new one starts).
    pub fn observe(&self, w: &mut BudgetWindow, p: f64, verdict: Verdict) {
        w.seen[0] += 1;
        w.reviewed[0] += u64::from(verdict == Verdict::Review);
        let in_band = self.thresholds.review.is_some_and(|r| p >= r)
            && self.thresholds.block.is_none_or(|b| p < b);
        if in_band {
            w.bins[0][bin_of(p)] += 1;
        }
        self.rotate(w);
    }

    /// Adds `pending` (one instance's counts since it last wrote) to `shared` (the window the
    /// store holds), as if its transactions had been observed there.
    pub fn merge(&self, shared: &mut BudgetWindow, pending: &BudgetWindow) {
        for half in 0..2 {
            shared.seen[0] += pending.seen[half];
            shared.reviewed[0] += pending.reviewed[half];
            for (s, p) in shared.bins[0].iter_mut().zip(&pending.bins[half]) {
                *s = s.saturating_add(*p);
            }
        }
        self.rotate(shared);
    }

    fn rotate(&self, w: &mut BudgetWindow) {
        if w.seen[0] >= self.window / 2 {
            w.seen = [0, w.seen[0]];
            w.reviewed = [0, w.reviewed[0]];
            w.bins = [[0; BINS], w.bins[0]];
        }
    }

    /// The thresholds in force after the traffic counted in `windows` (summed): the stored
    /// ones, with the review threshold raised as far as the budget needs. When even the top
    /// bin of the band exceeds the budget, or the reviews made reach it, nothing goes to review
    /// (`review: None`).
    pub fn thresholds(&self, windows: &[&BudgetWindow]) -> Thresholds {
        let Some(stored) = self.thresholds.review else {
            return self.thresholds;
        };
        let seen: u64 = windows.iter().map(|w| w.seen()).sum();
        let allowed = self.rate * seen.max(self.window / 2) as f64;
        let reviewed: u64 = windows.iter().map(|w| w.reviewed[0] + w.reviewed[1]).sum();
        if reviewed as f64 >= allowed {
            return Thresholds {
                review: None,
                block: self.thresholds.block,
            };
        }
        let mut above = 0u64;
        let mut edge = None;
        for i in (0..BINS).rev() {
            above += windows
                .iter()
                .map(|w| u64::from(w.bins[0][i]) + u64::from(w.bins[1][i]))
                .sum::<u64>();
            if above as f64 > allowed {
                break;
            }
            edge = Some(i);
        }
        let review = match edge {
            // Every counted transaction in the band fits: the stored threshold holds.
            Some(0) => Some(stored),
            Some(i) => Some(stored.max(lower_edge(i))),
            None => None,
        };
        Thresholds {
            review: review.filter(|r| self.thresholds.block.is_none_or(|b| *r < b)),
            block: self.thresholds.block,
        }
    }
}

impl BudgetWindow {
    /// Transactions counted in both halves.
    pub fn seen(&self) -> u64 {
        self.seen[0] + self.seen[1]
    }

    /// The bytes the key-value store keeps: `RVB1`, then per half its counts of transactions
    /// and of reviews (u64 each) and its non-empty bins as (index u8, count u32), all
    /// little-endian, each half's list led by its length (u8).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for half in 0..2 {
            out.extend_from_slice(&self.seen[half].to_le_bytes());
            out.extend_from_slice(&self.reviewed[half].to_le_bytes());
            let used: Vec<(usize, u32)> = self.bins[half]
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, c)| *c > 0)
                .collect();
            out.push(used.len() as u8);
            for (i, c) in used {
                out.push(i as u8);
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`BudgetWindow::encode`]'s bytes; anything else is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, WindowError> {
        let mut rest = bytes
            .strip_prefix(&MAGIC)
            .ok_or(WindowError("not a window"))?;
        let mut take = |n: usize| -> Result<&[u8], WindowError> {
            if rest.len() < n {
                return Err(WindowError("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let mut w = BudgetWindow::default();
        for half in 0..2 {
            w.seen[half] = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            w.reviewed[half] = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let used = take(1)?[0];
            for _ in 0..used {
                let i = usize::from(take(1)?[0]);
                let c = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
                if i >= BINS || w.bins[half][i] != 0 || c == 0 {
                    return Err(WindowError("bad bin"));
                }
                w.bins[half][i] = c;
            }
        }
        if !rest.is_empty() {
            return Err(WindowError("trailing bytes"));
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> ReviewBudget {
        ReviewBudget::new(
            Thresholds {
                review: Some(0.2),
                block: Some(0.9),
            },
            0.01,
            2_000,
        )
        .unwrap()
    }

    /// A stream where `share` of the traffic lands in the review band, spread over it.
    fn stream(n: usize, share: f64, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                if u < share {
                    0.2 + 0.7 * (u / share)
                } else {
                    0.05 * u
                }
            })
            .collect()
    }

    fn reviewed(b: &ReviewBudget, ps: &[f64]) -> usize {
        let mut w = BudgetWindow::default();
        ps.iter()
            .filter(|&&p| b.decide(None, &mut w, p) == Verdict::Review)
            .count()
    }

    #[test]
    fn within_budget_the_stored_threshold_holds() {
        let b = budget();
        let ps = stream(20_000, 0.005, 1);
        let plain = ps.iter().filter(|&&p| (0.2..0.9).contains(&p)).count();
        assert_eq!(reviewed(&b, &ps), plain);
    }

    #[test]
    fn a_shift_is_held_to_the_budget_and_keeps_the_likeliest() {
        let b = budget();
        // 6 % of traffic in the band against a 1 % budget.
        let ps = stream(40_000, 0.06, 2);
        let plain = ps.iter().filter(|&&p| (0.2..0.9).contains(&p)).count();
        let capped = reviewed(&b, &ps);
        assert!(plain > 2_000, "{plain}");
        let rate = capped as f64 / ps.len() as f64;
        assert!((0.008..=0.012).contains(&rate), "{rate}");
        // The threshold in force sits high in the band: the likeliest are the ones kept.
        let mut w = BudgetWindow::default();
        ps.iter()
            .for_each(|&p| b.observe(&mut w, p, Verdict::Allow));
        let t = b.thresholds(&[&w]).review.unwrap();
        assert!(t > 0.75 && t < 0.9, "{t}");
    }

    #[test]
    fn instances_merging_their_counts_see_what_one_would() {
        let b = budget();
        let ps = stream(10_000, 0.06, 3);
        let mut one = BudgetWindow::default();
        ps.iter()
            .for_each(|&p| b.observe(&mut one, p, Verdict::Review));
        // Four instances, each writing every 50 of its transactions.
        let mut shared = BudgetWindow::default();
        let mut pending = vec![BudgetWindow::default(); 4];
        for (i, &p) in ps.iter().enumerate() {
            let mine = &mut pending[i % 4];
            b.observe(mine, p, Verdict::Review);
            if mine.seen() == 50 {
                b.merge(&mut shared, mine);
                *mine = BudgetWindow::default();
            }
        }
        assert_eq!(shared, one);
    }

    #[test]
    fn an_over_budget_band_is_reviewed_from_above_what_was_seen() {
        let b = budget();
        let mut w = BudgetWindow::default();
        for _ in 0..2_000 {
            b.observe(&mut w, 0.85, Verdict::Allow);
        }
        // Above all of them (the next bin's edge), below the block threshold.
        let t = b.thresholds(&[&w]);
        assert!(t.review.is_some_and(|r| r > 0.85 && r < 0.9), "{t:?}");
        assert_eq!(t.block, Some(0.9));
        // Over budget in the band's top bin: no review at all.
        for _ in 0..2_000 {
            b.observe(&mut w, 0.899, Verdict::Allow);
        }
        assert_eq!(b.thresholds(&[&w]).review, None);
        // Before any traffic: up to rate · window / 2 of reviews fit.
        assert_eq!(b.thresholds(&[]).review, Some(0.2));
    }

    #[test]
    fn reviews_made_are_capped_when_the_threshold_lags_a_rising_wave() {
        let b = budget();
        // Calm (0.5 % in the band, within the 1 % budget), then a wave of 30 % in the band: the
        // threshold raised from the calm traffic lets the wave's first part through, and the
        // count of reviews made stops it at the budget.
        let mut ps = stream(2_000, 0.005, 5);
        ps.extend(stream(2_000, 0.3, 6));
        let mut w = BudgetWindow::default();
        let mut reviews = Vec::new();
        for &p in &ps {
            reviews.push(b.decide(None, &mut w, p) == Verdict::Review);
        }
        // In every stretch of a window's length, at most the budget of it (+1 for rounding).
        for end in (1_000..=ps.len()).step_by(100) {
            let start = end.saturating_sub(2_000);
            let n = reviews[start..end].iter().filter(|&&r| r).count();
            assert!(
                n <= (0.01 * (end - start).max(1_000) as f64) as usize + 1,
                "{n} up to {end}"
            );
        }
        // The wave's reviews: the cap let the budget's worth through, not none.
        assert!(reviews[2_000..].iter().filter(|&&r| r).count() >= 10);
    }

    #[test]
    fn a_probability_on_a_bin_edge_is_in_that_bin() {
        for i in 1..BINS {
            let edge = lower_edge(i);
            assert_eq!(bin_of(edge), i, "edge {i}");
            assert_eq!(bin_of(edge - edge * f64::EPSILON), i - 1, "below edge {i}");
        }
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(1.0), BINS - 1);
    }

    #[test]
    fn windows_round_trip_and_damage_is_refused() {
        let b = budget();
        let mut w = BudgetWindow::default();
        stream(1_500, 0.06, 4).iter().for_each(|&p| {
            b.decide(None, &mut w, p);
        });
        let bytes = w.encode();
        assert_eq!(BudgetWindow::decode(&bytes).unwrap(), w);
        for cut in 0..bytes.len() {
            assert!(BudgetWindow::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(BudgetWindow::decode(&longer).is_err());
        let empty = BudgetWindow::default();
        assert_eq!(BudgetWindow::decode(&empty.encode()).unwrap(), empty);
    }
}
