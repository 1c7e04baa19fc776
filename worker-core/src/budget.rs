//! The review budget at the edge: model-format's [`ReviewBudget`] with its window shared by every
//! instance through the velocity store (`budget/<model version>`).
//!
//! Each instance counts the probabilities it scores in a window of its own and, every
//! [`WRITE_EVERY`] of them, adds its counts to the stored window (read, merge, write) and keeps
//! what it read; the thresholds in force come from the stored window plus its own unwritten
//! counts. So a fresh instance decides by the whole edge's recent traffic after one read, and
//! the cost is one read per instance and a read and a write per [`WRITE_EVERY`] transactions.
//!
//! Writes are plain (last write wins): when two instances write at once, one's counts are lost.
//! That loses transactions and their band counts together, so the estimate stays what it was;
//! it is not worth a compare-and-swap. When the store fails, the instance goes on with its own
//! counts (logged once).

use std::cell::RefCell;

use model_format::booster::Verdict;
use model_format::budget::{BudgetWindow, ReviewBudget};

use crate::host::Host;
use crate::model::Loaded;

/// An instance adds its counts to the stored window every this many transactions.
pub(crate) const WRITE_EVERY: u64 = 64;
/// Key prefix of the stored windows in the velocity store.
pub const BUDGET_PREFIX: &str = "budget/";

/// One instance's view of the window of the model it serves.
#[derive(Default)]
pub(crate) struct Budgets {
    state: RefCell<Option<State>>,
}

struct State {
    version: String,
    budget: ReviewBudget,
    /// The stored window as last read or written.
    shared: BudgetWindow,
    /// Counted here since.
    pending: BudgetWindow,
    /// The last read or write failed (logged once until one succeeds).
    store_failed: bool,
}

fn key(version: &str) -> String {
    format!("{BUDGET_PREFIX}{version}")
}

async fn read<H: Host>(host: &H, version: &str) -> Result<BudgetWindow, String> {
    match host.state_get(&key(version)).await? {
        None => Ok(BudgetWindow::default()),
        // A damaged window is started afresh, not served from.
        Some(bytes) => Ok(BudgetWindow::decode(&bytes).unwrap_or_else(|e| {
            eprintln!("worker: {}: {e}; starting the window afresh", key(version));
            BudgetWindow::default()
        })),
    }
}

impl Budgets {
    /// Makes this instance ready to decide for `l`: reads the stored window when `l`'s model
    /// has a budget and this instance has not read it yet for that model.
    pub(crate) async fn prepare<H: Host>(&self, host: &H, l: &Loaded) {
        let Some(budget) = l.budget else { return };
        if self
            .state
            .borrow()
            .as_ref()
            .is_some_and(|s| s.version == l.version)
        {
            return;
        }
        let (shared, store_failed) = match read(host, &l.version).await {
            Ok(w) => (w, false),
            Err(e) => {
                eprintln!(
                    "worker: review budget window unavailable ({e}); counting this instance's \
                     traffic alone"
                );
                (BudgetWindow::default(), true)
            }
        };
        *self.state.borrow_mut() = Some(State {
            version: l.version.clone(),
            budget,
            shared,
            pending: BudgetWindow::default(),
            store_failed,
        });
    }

    /// The verdict for probability `p` of `l`'s supervised model by the thresholds in force,
    /// then counts `p`. `None` when `l`'s model has no budget or [`Budgets::prepare`] was not
    /// called for it (the stored thresholds then decide).
    pub(crate) fn verdict(&self, l: &Loaded, p: f64) -> Option<Verdict> {
        let mut state = self.state.borrow_mut();
        let s = state.as_mut().filter(|s| s.version == l.version)?;
        Some(s.budget.decide(Some(&s.shared), &mut s.pending, p))
    }

    /// Adds this instance's counts to the stored window when [`WRITE_EVERY`] have gathered.
    pub(crate) async fn write_if_due<H: Host>(&self, host: &H) {
        let (version, budget, pending) = {
            let mut state = self.state.borrow_mut();
            let Some(s) = state.as_mut() else { return };
            if s.pending.seen() < WRITE_EVERY {
                return;
            }
            (s.version.clone(), s.budget, std::mem::take(&mut s.pending))
        };
        let written = async {
            let mut shared = read(host, &version).await?;
            budget.merge(&mut shared, &pending);
            host.state_set(&key(&version), &shared.encode()).await?;
            Ok::<_, String>(shared)
        }
        .await;
        let mut state = self.state.borrow_mut();
        let Some(s) = state.as_mut().filter(|s| s.version == version) else {
            return;
        };
        match written {
            Ok(shared) => {
                s.shared = shared;
                s.store_failed = false;
            }
            Err(e) => {
                if !s.store_failed {
                    eprintln!(
                        "worker: review budget window unavailable ({e}); counting this \
                         instance's traffic alone until the store answers"
                    );
                }
                // Its counts stay here, in the instance's own view; the next write retries.
                budget.merge(&mut s.shared, &pending);
                s.store_failed = true;
            }
        }
    }
}
