//! `trainer backtest`: what models and rules would have done on a labelled history — each
//! model's ROC-AUC and average precision (overall and per segment, e.g. per fraud pattern), and
//! for each rule how many transactions it would have hit and, with labels, its precision and
//! recall.
//!
//! The rules are evaluated by the `rules` crate the edge runs, on the first model's scores and
//! features (velocity features computed by the edge's own state machine over the rows in
//! arrival order), so a backtest says what the edge would have answered.

use std::path::Path;

use anyhow::{Context, Result, bail};
use model_format::Model;
use rules::{Operand, Outcome, Policy};
use serde::Serialize;

use crate::evaluate::{average_precision, roc_auc};
use crate::spec::{FeatureSpec, Raw, raw_columns};
use crate::supervised::{BudgetReplay, default_decision};
use model_format::booster::Verdict;

/// One model's ranking quality on the history.
#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub model_version: String,
    /// What ranks the rows: the forest's `anomaly_score`, or the supervised
    /// `fraud_probability`.
    pub scored_by: &'static str,
    pub features: Vec<String>,
    pub roc_auc: Option<f64>,
    pub average_precision: Option<f64>,
    /// Per segment value (positives of that segment against every negative).
    pub segments: Vec<SegmentReport>,
    /// The supervised model's thresholds on this history: rate, precision and recall.
    pub operating_points: Vec<crate::supervised::OperatingPoint>,
}

/// Quality on one segment.
#[derive(Debug, Serialize)]
pub struct SegmentReport {
    pub segment: String,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub average_precision: Option<f64>,
}

/// One rule's hits.
#[derive(Debug, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub hits: usize,
    /// Times it was the rule that decided (the first match).
    pub decided: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// The whole backtest.
#[derive(Debug, Serialize)]
pub struct Report {
    pub rows: usize,
    pub positives: Option<usize>,
    pub models: Vec<ModelReport>,
    pub rules: Vec<RuleReport>,
    /// Transactions per decision (rules on the first model).
    pub decisions: Vec<(String, usize)>,
    /// The first model's review budget, as the edge holds it, when it has one.
    pub review_budget: Option<BudgetReport>,
}

/// How the review budget held over the history (replayed in arrival order as one edge).
#[derive(Debug, Serialize)]
pub struct BudgetReport {
    /// The share of traffic the model may send to review.
    pub rate: f64,
    /// Transactions that share is counted over.
    pub window: u64,
    /// Transactions in the stored review band that the model allowed, the budget being spent.
    pub over_budget: usize,
    /// The review threshold in force at the end.
    pub review_threshold: Option<f64>,
}

/// One column of a local file as text (numbers printed), for segments and carried columns.
pub fn text_column(path: &Path, name: &str) -> Result<Vec<Option<String>>> {
    let lf = crate::source::scan_file(&crate::data::local_input(path)?)?;
    let schema = lf.clone().collect_schema()?;
    if schema.get(name).is_none() {
        bail!("{} has no column {name:?}", path.display());
    }
    let df = lf.select([polars::prelude::col(name)]).collect()?;
    match raw_columns(&df, &schema, &[name.to_string()], &[name])?.pop() {
        Some(Raw::Text(v)) => Ok(v),
        _ => bail!("column {name:?} could not be read as text"),
    }
}

/// Runs the backtest of `models` (and `policy`, on the first model) over the file at `input`.
pub fn run(
    input: &Path,
    spec: &FeatureSpec,
    models: &[(String, Model)],
    policy: Option<&Policy>,
    segment: Option<&str>,
) -> Result<Report> {
    anyhow::ensure!(!models.is_empty(), "no model to backtest");
    let segments = segment.map(|s| text_column(input, s)).transpose()?;
    let mut reports = Vec::new();
    let mut first = None;
    for (version, model) in models {
        let data = crate::spec::load_file(input, &spec.for_model(model), false)
            .with_context(|| format!("reading {} for {version}", input.display()))?;
        let scores = crate::score::score_table(model, &data.table, false)?;
        // Higher = more anomalous for the metrics.
        let forest_risk: Vec<f64> = scores.rows.iter().map(|s| -s.decision).collect();
        let mut rankings = vec![("anomaly_score", forest_risk)];
        if let Some(p) = crate::supervised::probabilities(model, &data.table)? {
            rankings.insert(0, ("fraud_probability", p));
        }
        let labels = data.labels.clone();
        for (scored_by, risk) in rankings {
            let quality = |keep: &dyn Fn(usize) -> bool| -> (usize, Option<f64>, Option<f64>) {
                let Some(l) = &labels else {
                    return (0, None, None);
                };
                let idx: Vec<usize> = (0..risk.len()).filter(|&i| keep(i)).collect();
                let s: Vec<f64> = idx.iter().map(|&i| risk[i]).collect();
                let y: Vec<bool> = idx.iter().map(|&i| l[i]).collect();
                (
                    y.iter().filter(|&&b| b).count(),
                    roc_auc(&s, &y),
                    average_precision(&s, &y),
                )
            };
            let (_, auc, ap) = quality(&|_| true);
            let mut segment_reports = Vec::new();
            if let (Some(seg), Some(l)) = (&segments, &labels) {
                let mut values: Vec<&str> = seg
                    .iter()
                    .zip(l)
                    .filter(|(_, pos)| **pos)
                    .filter_map(|(v, _)| v.as_deref())
                    .collect();
                values.sort_unstable();
                values.dedup();
                for v in values {
                    let (positives, roc_auc, average_precision) =
                        quality(&|i| !l[i] || seg[i].as_deref() == Some(v));
                    segment_reports.push(SegmentReport {
                        segment: v.to_string(),
                        positives,
                        roc_auc,
                        average_precision,
                    });
                }
            }
            let operating_points = match (model.supervised(), &labels) {
                (Some(b), Some(l)) if scored_by == "fraud_probability" => {
                    crate::supervised::operating_points(&risk, l, b.thresholds())
                }
                _ => Vec::new(),
            };
            reports.push(ModelReport {
                model_version: version.clone(),
                scored_by,
                features: model.features().to_vec(),
                roc_auc: auc,
                average_precision: ap,
                segments: segment_reports,
                operating_points,
            });
        }
        if first.is_none() {
            first = Some((model, data, scores));
        }
    }
    let (model, data, scores) = first.expect("at least one model");
    let labels = data.labels.as_deref();
    let mut rule_reports = Vec::new();
    let mut over_budget = 0usize;
    let budget;
    let mut decisions: Vec<(String, usize)> = Outcome::ALL
        .iter()
        .map(|o| (o.as_str().to_string(), 0))
        .collect();
    if let Some(policy) = policy {
        // What a rule may name: the model's features, the file's columns, the scores.
        let variables: Vec<String> = policy
            .variables()
            .iter()
            .map(|v| (*v).to_string())
            .collect();
        // Where each variable's value comes from, decided once.
        enum Var {
            FraudProbability,
            AnomalyScore,
            RiskScore,
            IsAnomaly,
            Feature(usize),
            Column(Vec<Option<String>>),
        }
        let features = &data.table.names;
        let mut sources = Vec::with_capacity(variables.len());
        for v in &variables {
            sources.push(match v.as_str() {
                "fraud_probability" => Var::FraudProbability,
                "anomaly_score" => Var::AnomalyScore,
                "risk_score" => Var::RiskScore,
                "is_anomaly" => Var::IsAnomaly,
                name => match features.iter().position(|f| f == name) {
                    Some(i) => Var::Feature(i),
                    None => Var::Column(text_column(input, name).with_context(|| {
                        format!("the rules name {name:?}, which is neither a feature of the model nor a column")
                    })?),
                },
            });
        }
        let compiled = policy.compile(&variables)?;
        let probabilities = crate::supervised::probabilities(model, &data.table)?;
        let mut replay = BudgetReplay::new(model);
        let names = compiled.rule_names().to_vec();
        let mut hits = vec![0usize; names.len()];
        let mut true_hits = vec![0usize; names.len()];
        let mut decided = vec![0usize; names.len()];
        for (row, s) in scores.rows.iter().enumerate() {
            let values: Vec<Operand<'_>> = sources
                .iter()
                .map(|v| match v {
                    Var::FraudProbability => probabilities
                        .as_ref()
                        .map_or(Operand::Missing, |p| Operand::Number(p[row])),
                    Var::AnomalyScore => Operand::Number(s.decision),
                    Var::RiskScore => Operand::Number(s.risk()),
                    Var::IsAnomaly => Operand::Bool(s.is_anomaly()),
                    Var::Feature(i) => Operand::Number(data.table.columns[*i][row]),
                    Var::Column(col) => col[row].as_deref().map_or(Operand::Missing, |t| {
                        t.parse::<f64>().map_or(Operand::Text(t), Operand::Number)
                    }),
                })
                .collect();
            let verdict = match replay.verdict(probabilities.as_ref().map(|p| p[row])) {
                Some(v) => {
                    let decided = compiled.evaluate_or(&values, rules::fraud_outcome(v));
                    over_budget +=
                        usize::from(v == Verdict::OverBudget && decided.by_rule.is_none());
                    decided
                }
                None => compiled.evaluate(&values, s.is_anomaly()),
            };
            for &i in &verdict.matched {
                hits[usize::from(i)] += 1;
                if labels.is_some_and(|l| l[row]) {
                    true_hits[usize::from(i)] += 1;
                }
            }
            if let Some(i) = verdict.by_rule {
                decided[i] += 1;
            }
            if let Some(d) = decisions
                .iter_mut()
                .find(|(n, _)| n == verdict.decision.as_str())
            {
                d.1 += 1;
            }
        }
        budget = replay.state();
        let positives = labels.map(|l| l.iter().filter(|&&b| b).count());
        for (i, rule) in names.into_iter().enumerate() {
            rule_reports.push(RuleReport {
                rule,
                hits: hits[i],
                decided: decided[i],
                precision: (labels.is_some() && hits[i] > 0)
                    .then(|| true_hits[i] as f64 / hits[i] as f64),
                recall: positives
                    .filter(|&p| p > 0)
                    .map(|p| true_hits[i] as f64 / p as f64),
            });
        }
    } else {
        let probabilities = crate::supervised::probabilities(model, &data.table)?;
        let mut replay = BudgetReplay::new(model);
        for (row, s) in scores.rows.iter().enumerate() {
            let v = replay.verdict(probabilities.as_ref().map(|p| p[row]));
            over_budget += usize::from(v == Some(Verdict::OverBudget));
            let d = default_decision(s.is_anomaly(), v);
            if let Some(x) = decisions.iter_mut().find(|(n, _)| n == d) {
                x.1 += 1;
            }
        }
        budget = replay.state();
    }
    Ok(Report {
        rows: scores.rows.len(),
        positives: labels.map(|l| l.iter().filter(|&&b| b).count()),
        models: reports,
        rules: rule_reports,
        decisions,
        review_budget: budget.map(|(rate, window, threshold)| BudgetReport {
            rate,
            window,
            over_budget,
            review_threshold: threshold,
        }),
    })
}

impl Report {
    /// Average precision per segment (and over all rows), one bar per model ranking, as a PNG
    /// (`trainer backtest --chart`): which model sees which pattern, at a glance.
    pub fn chart(&self, path: &Path) -> Result<()> {
        let mut groups: Vec<String> = Vec::new();
        for m in &self.models {
            for s in &m.segments {
                if !groups.contains(&s.segment) {
                    groups.push(s.segment.clone());
                }
            }
        }
        groups.push("all".to_string());
        let series: Vec<(String, Vec<Option<f64>>)> = self
            .models
            .iter()
            .map(|m| {
                let name = if m.scored_by == "fraud_probability" {
                    format!("{} (supervised)", m.model_version)
                } else {
                    format!(
                        "{} (forest, {} features)",
                        m.model_version,
                        m.features.len()
                    )
                };
                let values = groups
                    .iter()
                    .map(|g| {
                        if g == "all" {
                            m.average_precision
                        } else {
                            m.segments
                                .iter()
                                .find(|s| &s.segment == g)
                                .and_then(|s| s.average_precision)
                        }
                    })
                    .collect();
                (name, values)
            })
            .collect();
        crate::evaluate::bar_chart(
            path,
            "Average precision per segment (each segment's positives against every negative)",
            "average precision",
            &groups,
            &series,
        )
    }

    /// A plain-text summary (what the CLI prints).
    pub fn to_text(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut out = format!(
            "{} transactions{}\n\nmodel                 features  ROC-AUC  AP\n",
            self.rows,
            self.positives
                .map_or(String::new(), |p| format!(", {p} labelled positive"))
        );
        for m in &self.models {
            let name = if m.scored_by == "fraud_probability" {
                format!("{} (supervised)", m.model_version)
            } else {
                m.model_version.clone()
            };
            out += &format!(
                "{:<20}  {:>8}  {:>7}  {}\n",
                name,
                m.features.len(),
                f(m.roc_auc),
                f(m.average_precision)
            );
            for s in &m.segments {
                out += &format!(
                    "  {:<28} {:>5} positives  ROC-AUC {}  AP {}\n",
                    s.segment,
                    s.positives,
                    f(s.roc_auc),
                    f(s.average_precision)
                );
            }
            for o in &m.operating_points {
                out += &format!("  {}\n", o.line());
            }
        }
        if !self.rules.is_empty() {
            out += "\nrule                      hits  decided  precision  recall\n";
            for r in &self.rules {
                out += &format!(
                    "{:<24} {:>5}  {:>7}  {:>9}  {}\n",
                    r.rule,
                    r.hits,
                    r.decided,
                    f(r.precision),
                    f(r.recall)
                );
            }
        }
        out += "\ndecisions:";
        for (d, n) in &self.decisions {
            out += &format!(" {d} {n}");
        }
        out.push('\n');
        if let Some(b) = &self.review_budget {
            let reviews = self
                .decisions
                .iter()
                .find(|(d, _)| d == "review")
                .map_or(0, |(_, n)| *n);
            out += &format!(
                "review budget {:.2} % of traffic (counted over {} transactions): {:.2} % \
                 reviewed, {} more in the stored review band allowed over budget; review \
                 threshold in force at the end {}\n",
                100.0 * b.rate,
                b.window,
                100.0 * reviews as f64 / self.rows.max(1) as f64,
                b.over_budget,
                b.review_threshold
                    .map_or("none (the budget is spent)".to_string(), |t| format!(
                        "{t:.4}"
                    )),
            );
        }
        out
    }
}
