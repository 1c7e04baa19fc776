//! The supervised model beside the forest: fitted on the labels, validated in time order,
//! calibrated, and given operating points from an alert budget.
//!
//! Rows are taken in file order, which is arrival order (as for velocity features): the first
//! part fits the trees, the later part early-stops them, calibrates their probabilities and
//! chooses the thresholds, so nothing is tuned on rows older than what it is checked on, and a
//! run of fraud on one card never straddles a random cut.

use model_format::booster::{BoostTree, Booster, Calibration, Thresholds, Verdict};
use model_format::budget::{BudgetWindow, ReviewBudget};
use model_format::{MAX_FEATURES, Model};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Table;
use crate::evaluate::{average_precision, roc_auc};
use crate::gbdt::{CheckedGbdt, GbdtParams, platt};

/// What the operator asks of the supervised model.
#[derive(Debug, Clone)]
pub struct SupervisedParams {
    pub gbdt: GbdtParams,
    /// Share of the rows (the latest ones) that validate, calibrate and set thresholds.
    pub validation_fraction: f64,
    /// Share of traffic the team can review (0.005 = 0.5 %).
    pub review_rate: f64,
    /// Transactions the edge counts that share over (model-format's `budget`).
    pub review_window: u64,
    /// Precision required to block outright; `None` = never block by probability.
    pub block_precision: Option<f64>,
    /// Fewer labelled positives than this (or fewer than a fifth of it in the validation
    /// window) → no supervised model; the forest decides alone.
    pub min_positives: usize,
}

impl Default for SupervisedParams {
    fn default() -> Self {
        SupervisedParams {
            gbdt: GbdtParams::default(),
            validation_fraction: 0.2,
            review_rate: 0.005,
            review_window: model_format::budget::DEFAULT_WINDOW,
            block_precision: Some(0.95),
            min_positives: 50,
        }
    }
}

/// How the supervised model did on its validation window, and its operating points there.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisedReport {
    pub fitted: bool,
    /// Why there is no supervised model, when there is none.
    pub reason: Option<String>,
    pub positives_fit: usize,
    pub positives_validation: usize,
    pub validation_rows: usize,
    pub trees: usize,
    pub positive_weight: f64,
    pub validation_roc_auc: Option<f64>,
    pub validation_average_precision: Option<f64>,
    pub review_threshold: Option<f64>,
    pub block_threshold: Option<f64>,
    pub operating_points: Vec<OperatingPoint>,
    /// Seconds spent boosting (binning, trees, early stopping), the part comparable with
    /// another learner given the same feature table.
    pub boosting_seconds: f64,
}

impl OperatingPoint {
    /// One line for people: the band, its share of traffic, precision and recall.
    pub fn line(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        format!(
            "{:<6} at fraud_probability >= {:.4}: {:.3} % of rows ({}), precision {}, recall {}",
            self.decision,
            self.threshold,
            100.0 * self.rate,
            self.rows,
            f(self.precision),
            f(self.recall)
        )
    }
}

/// What a threshold does on labelled rows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OperatingPoint {
    pub decision: String,
    pub threshold: f64,
    /// Share of rows in this band.
    pub rate: f64,
    pub rows: usize,
    /// Share of the band that is fraud.
    pub precision: Option<f64>,
    /// Share of all fraud caught at this threshold or above.
    pub recall: Option<f64>,
}

/// The supervised model's inputs for every row, column-major, exactly as the edge computes
/// them ([`Model::score_fraud`]): the scaled features as f32, then the forest's risk as f32.
pub fn inputs(model: &Model, table: &Table) -> Result<Vec<Vec<f32>>, model_format::ScoreError> {
    let n = model.features().len();
    let rows = table.rows();
    let scaler = model.scaler();
    let mut cols: Vec<Vec<f32>> = table
        .columns
        .par_iter()
        .enumerate()
        .map(|(f, c)| c.iter().map(|&v| scaler.scale_one(f, v) as f32).collect())
        .collect();
    let risk: Vec<f32> = (0..rows)
        .into_par_iter()
        .map_init(
            || vec![0.0; n],
            |row, i| {
                for (f, c) in table.columns.iter().enumerate() {
                    row[f] = c[i];
                }
                model.score(row).map(|s| s.risk() as f32)
            },
        )
        .collect::<Result<_, _>>()?;
    cols.push(risk);
    debug_assert!(cols.len() <= MAX_FEATURES + 1);
    Ok(cols)
}

/// Fraud probabilities of every row of `table` under `model`'s supervised classifier, as the
/// edge computes them; `None` without one.
pub fn probabilities(model: &Model, table: &Table) -> anyhow::Result<Option<Vec<f64>>> {
    if model.supervised().is_none() {
        return Ok(None);
    }
    let n = model.features().len();
    let p = (0..table.rows())
        .into_par_iter()
        .map_init(
            || vec![0.0; n],
            |row, i| {
                for (f, c) in table.columns.iter().enumerate() {
                    row[f] = c[i];
                }
                model
                    .score_fraud(row)
                    .map(|(_, f)| f.map_or(0.0, |f| f.probability))
            },
        )
        .collect::<Result<Vec<f64>, _>>()?;
    Ok(Some(p))
}

/// The edge's supervised verdicts replayed in arrival order: the stored thresholds, with the
/// review threshold raised as the review budget would have raised it at one edge that saw the
/// same transactions (model-format's `budget`).
pub struct BudgetReplay {
    budget: Option<ReviewBudget>,
    stored: Option<Thresholds>,
    window: BudgetWindow,
}

impl BudgetReplay {
    /// For `model`'s supervised classifier (none: every verdict is `None`).
    pub fn new(model: &Model) -> Self {
        BudgetReplay {
            budget: ReviewBudget::of(model),
            stored: model.supervised().map(Booster::thresholds),
            window: BudgetWindow::default(),
        }
    }

    /// The verdict for the next transaction's probability; the transaction is then counted.
    pub fn verdict(&mut self, p: Option<f64>) -> Option<Verdict> {
        let p = p?;
        let Some(b) = &self.budget else {
            return self.stored.map(|t| t.verdict(p));
        };
        Some(b.decide(None, &mut self.window, p))
    }

    /// The budget held (rate, window) and the review threshold in force after the replay.
    pub fn state(&self) -> Option<(f64, u64, Option<f64>)> {
        self.budget
            .map(|b| (b.rate(), b.window(), b.thresholds(&[&self.window]).review))
    }
}

/// The decision without a rule policy, as the edge makes it: by the supervised verdict when
/// the model has a supervised classifier, else review what the forest flags.
pub fn default_decision(is_anomaly: bool, verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(v) => rules::fraud_outcome(v).0.as_str(),
        None if is_anomaly => "review",
        None => "allow",
    }
}

/// Thresholds from the budget on validation probabilities: block at the lowest probability
/// (≥ 0.5) whose band from the top is at least `block_precision` precise (with ≥ 5 positives
/// in it), review the next `review_rate` of the traffic below it.
pub fn choose_thresholds(p: &[f64], y: &[bool], params: &SupervisedParams) -> Thresholds {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let mut block = None;
    let mut block_rows = 0;
    if let Some(target) = params.block_precision {
        let (mut tp, mut k) = (0usize, 0usize);
        while k < order.len() {
            // Whole groups of equal probability: a threshold cannot split them.
            let v = p[order[k]];
            while k < order.len() && p[order[k]] == v {
                tp += usize::from(y[order[k]]);
                k += 1;
            }
            // Never block what is more likely legitimate than fraud, whatever the window says.
            if tp >= 5 && tp as f64 / k as f64 >= target && v >= 0.5 {
                block = Some(v);
                block_rows = k;
            }
        }
    }
    let budget = (params.review_rate * p.len() as f64).round() as usize;
    let review = if budget == 0 {
        None
    } else {
        let at = (block_rows + budget).min(order.len()) - 1;
        let t = p[order[at]];
        // Not below the block threshold's band, and never 0 (that would review everything).
        (t > 0.0).then_some(t)
    };
    let review = match (review, block) {
        (Some(r), Some(b)) if r >= b => None,
        (r, _) => r,
    };
    Thresholds { review, block }
}

/// The bands the thresholds make on labelled rows.
pub fn operating_points(p: &[f64], y: &[bool], t: Thresholds) -> Vec<OperatingPoint> {
    let positives = y.iter().filter(|&&b| b).count();
    let mut out = Vec::new();
    let band = |lo: f64, hi: Option<f64>| {
        let (mut rows, mut tp, mut tp_above) = (0usize, 0usize, 0usize);
        for (&pi, &yi) in p.iter().zip(y) {
            if pi >= lo {
                tp_above += usize::from(yi);
                if hi.is_none_or(|h| pi < h) {
                    rows += 1;
                    tp += usize::from(yi);
                }
            }
        }
        (rows, tp, tp_above)
    };
    for (name, lo, hi) in [("block", t.block, None), ("review", t.review, t.block)] {
        let Some(lo) = lo else { continue };
        let (rows, tp, above) = band(lo, hi);
        out.push(OperatingPoint {
            decision: name.to_string(),
            threshold: lo,
            rate: rows as f64 / p.len().max(1) as f64,
            rows,
            precision: (rows > 0).then(|| tp as f64 / rows as f64),
            recall: (positives > 0).then(|| above as f64 / positives as f64),
        });
    }
    out
}

/// Fits the supervised classifier on `table` and `labels` (rows in arrival order) beside
/// `model`'s forest, or explains why not (the model is then returned unchanged).
pub fn fit(
    model: Model,
    table: &Table,
    labels: &[bool],
    params: &SupervisedParams,
) -> anyhow::Result<(Model, SupervisedReport)> {
    let gbdt: CheckedGbdt = params.gbdt.check()?;
    anyhow::ensure!(
        (0.01..=0.9).contains(&params.validation_fraction),
        "the validation fraction must be between 0.01 and 0.9"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&params.review_rate),
        "the review rate must be a share of the traffic (0 to 100 %)"
    );
    anyhow::ensure!(
        params.block_precision.is_none_or(|p| p > 0.0 && p <= 1.0),
        "the block precision must be in (0, 1]"
    );
    let rows = table.rows();
    let train_rows = ((1.0 - params.validation_fraction) * rows as f64).floor() as usize;
    let positives_fit = labels[..train_rows].iter().filter(|&&b| b).count();
    let positives_validation = labels[train_rows..].iter().filter(|&&b| b).count();
    let mut report = SupervisedReport {
        fitted: false,
        reason: None,
        positives_fit,
        positives_validation,
        validation_rows: rows - train_rows,
        trees: 0,
        positive_weight: 0.0,
        validation_roc_auc: None,
        validation_average_precision: None,
        review_threshold: None,
        block_threshold: None,
        operating_points: Vec::new(),
        boosting_seconds: 0.0,
    };
    let need_validation = params.min_positives.div_ceil(5).max(1);
    if positives_fit + positives_validation < params.min_positives
        || positives_validation < need_validation
        || positives_fit == 0
    {
        report.reason = Some(format!(
            "{positives_fit} labelled positives in the fitting rows and {positives_validation} in \
             the validation window (the latest {:.0} %); a supervised model needs at least {} in \
             all and {need_validation} in the window: the forest decides alone",
            100.0 * params.validation_fraction,
            params.min_positives
        ));
        return Ok((model, report));
    }
    let x = inputs(&model, table)?;
    let started = std::time::Instant::now();
    let fitted = gbdt.fit(&x, labels, train_rows)?;
    report.boosting_seconds = started.elapsed().as_secs_f64();
    let y_val = &labels[train_rows..];
    let (slope, intercept) = platt(&fitted.validation_margin, y_val);
    let trees = fitted
        .trees
        .iter()
        .map(|t| BoostTree::new(t.nodes.clone(), &t.leaf_values))
        .collect::<Result<Vec<_>, _>>()?;
    let booster = Booster::new(
        trees,
        fitted.base_margin,
        Calibration { slope, intercept },
        Thresholds::default(),
        model.features().len() + 1,
    )?;
    let p_val: Vec<f64> = fitted
        .validation_margin
        .iter()
        .map(|&m| booster.calibrate(m).probability)
        .collect();
    let thresholds = choose_thresholds(&p_val, y_val, params);
    let booster = booster.with_thresholds(thresholds)?;
    report.fitted = true;
    report.trees = fitted.trees.len();
    report.positive_weight = fitted.positive_weight;
    report.validation_roc_auc = roc_auc(&p_val, y_val);
    report.validation_average_precision = average_precision(&p_val, y_val);
    report.review_threshold = thresholds.review;
    report.block_threshold = thresholds.block;
    report.operating_points = operating_points(&p_val, y_val, thresholds);
    let model = model
        .with_meta("supervised_trees", &fitted.trees.len().to_string())
        .with_meta("review_rate", &params.review_rate.to_string())
        .with_meta("review_window", &params.review_window.to_string())
        .with_meta(
            "block_precision",
            &params
                .block_precision
                .map_or("off".to_string(), |p| p.to_string()),
        )
        .with_supervised(booster)?;
    Ok((model, report))
}

impl SupervisedReport {
    /// What `trainer fit` prints.
    pub fn to_text(&self) -> String {
        if let Some(reason) = &self.reason {
            return format!("no supervised model: {reason}");
        }
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut out = format!(
            "supervised: {} trees in {:.2} s on {} + {} labelled positives (positive weight \
             {:.2}); validation window {} rows: ROC-AUC {}, AP {}",
            self.trees,
            self.boosting_seconds,
            self.positives_fit,
            self.positives_validation,
            self.positive_weight,
            self.validation_rows,
            f(self.validation_roc_auc),
            f(self.validation_average_precision)
        );
        for o in &self.operating_points {
            out += &format!("\n  {}", o.line());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_budget() {
        // 1000 rows: the top 20 are fraud, then 20 mixed, then normal.
        let p: Vec<f64> = (0..1000).map(|i| 1.0 - f64::from(i) / 1000.0).collect();
        let y: Vec<bool> = (0..1000)
            .map(|i| i < 20 || (i < 40 && i % 2 == 0))
            .collect();
        let params = SupervisedParams {
            review_rate: 0.01,
            block_precision: Some(0.95),
            ..SupervisedParams::default()
        };
        let t = choose_thresholds(&p, &y, &params);
        // Block: the lowest threshold still ≥ 95 % precise.
        let block = t.block.unwrap();
        let points = operating_points(&p, &y, t);
        assert!(points[0].precision.unwrap() >= 0.95);
        assert!(block <= p[19]);
        // Review: exactly the budget's rows below the block band.
        assert_eq!(points[1].rows, 10);
        assert!((points[1].rate - 0.01).abs() < 1e-12);
        // No block precision: review only.
        let t = choose_thresholds(
            &p,
            &y,
            &SupervisedParams {
                block_precision: None,
                review_rate: 0.02,
                ..SupervisedParams::default()
            },
        );
        assert_eq!(t.block, None);
        assert_eq!(operating_points(&p, &y, t)[0].rows, 20);
    }

    #[test]
    fn too_few_labels_leave_the_forest_alone_and_say_why() {
        let rows = 400;
        let table = Table {
            names: vec!["amount".into()],
            columns: vec![(0..rows).map(|i| f64::from(i % 97)).collect()],
        };
        let forest = crate::fit(
            &table,
            &crate::forest::IsolationForestParams {
                n_estimators: 5,
                ..Default::default()
            },
        )
        .unwrap();
        // 12 positives, all in the fitting rows: under the default 50.
        let labels: Vec<bool> = (0..rows).map(|i| i < 120 && i % 10 == 0).collect();
        let (model, report) = fit(
            forest.clone(),
            &table,
            &labels,
            &SupervisedParams::default(),
        )
        .unwrap();
        assert!(!report.fitted);
        assert!(model.supervised().is_none());
        assert_eq!(model, forest);
        let why = report.to_text();
        assert!(
            why.contains("12 labelled positives") && why.contains("forest decides alone"),
            "{why}"
        );
    }
}
