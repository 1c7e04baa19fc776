//! `trainer evaluate`: how well a model separates labelled anomalies, and how its scores are
//! distributed.
//!
//! The ranking score is `-decision_function` (higher = more anomalous), so ROC-AUC and average
//! precision do not depend on the model's offset; precision, recall, F1, the confusion matrix and
//! the alert rate are taken at the model's own threshold (`decision < 0`, what the worker flags).
//! Average precision follows scikit-learn's `average_precision_score` (step-wise sum over distinct
//! thresholds, no interpolation); ROC-AUC is the Mann–Whitney statistic with ties counted half,
//! equal to scikit-learn's `roc_auc_score`.

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// Confusion matrix at the model's threshold; "positive" = anomalous.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Label-based quality figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Labelled {
    pub positives: usize,
    pub negatives: usize,
    /// `None` when only one class is present.
    pub roc_auc: Option<f64>,
    /// `None` without positives.
    pub average_precision: Option<f64>,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub confusion: Confusion,
}

/// Distribution of `anomaly_score` (decision_function).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_version: String,
    pub inputs: Vec<String>,
    pub rows: usize,
    /// The model's offset: `anomaly_score = score_samples - offset`, anomalous below 0.
    pub offset: f64,
    pub alerts: usize,
    pub alert_rate: f64,
    pub anomaly_score: Distribution,
    pub labelled: Option<Labelled>,
    /// Scores the model would need as threshold to alert on these shares of rows.
    pub thresholds_for_alert_rate: Vec<(f64, f64)>,
}

/// numpy's default ('linear') percentile of sorted values.
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Summary statistics of `values`.
pub fn distribution(values: &[f64]) -> Distribution {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len().max(1) as f64;
    let mean = s.iter().sum::<f64>() / n;
    let std = (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let p = |q| percentile_sorted(&s, q);
    Distribution {
        mean,
        std,
        min: p(0.0),
        p01: p(1.0),
        p05: p(5.0),
        p25: p(25.0),
        p50: p(50.0),
        p75: p(75.0),
        p95: p(95.0),
        p99: p(99.0),
        max: p(100.0),
    }
}

/// ROC-AUC of `scores` (higher = positive) against `labels`; `None` if a class is missing.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * idx[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Points of the curves at each distinct threshold, from the highest score down:
/// `(false positive rate, true positive rate, precision, recall)`.
fn curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64, f64)> {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        out.push((
            if neg > 0.0 { fp / neg } else { 0.0 },
            if pos > 0.0 { tp / pos } else { 0.0 },
            tp / (tp + fp),
            if pos > 0.0 { tp / pos } else { 0.0 },
        ));
        i = j;
    }
    out
}

/// scikit-learn's `average_precision_score`; `None` without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if !labels.iter().any(|&l| l) {
        return None;
    }
    let mut ap = 0.0;
    let mut last_recall = 0.0;
    for (_, _, precision, recall) in curve(scores, labels) {
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    Some(ap)
}

/// Label-based figures; `flagged[i]` = the model alerts on row i.
pub fn labelled(scores: &[f64], flagged: &[bool], labels: &[bool]) -> Labelled {
    let mut c = Confusion {
        tp: 0,
        fp: 0,
        tn: 0,
        fn_: 0,
    };
    for (&f, &l) in flagged.iter().zip(labels) {
        match (f, l) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, false) => c.tn += 1,
            (false, true) => c.fn_ += 1,
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(c.tp, c.tp + c.fp);
    let recall = ratio(c.tp, c.tp + c.fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let positives = labels.iter().filter(|&&l| l).count();
    Labelled {
        positives,
        negatives: labels.len() - positives,
        roc_auc: roc_auc(scores, labels),
        average_precision: average_precision(scores, labels),
        precision,
        recall,
        f1,
        confusion: c,
    }
}

/// Builds the report from per-row decision_function values.
pub fn evaluate(
    model_version: String,
    inputs: Vec<String>,
    offset: f64,
    decision: &[f64],
    labels: Option<&[bool]>,
) -> Report {
    let ranking: Vec<f64> = decision.iter().map(|d| -d).collect();
    let flagged: Vec<bool> = decision.iter().map(|&d| d < 0.0).collect();
    let alerts = flagged.iter().filter(|&&f| f).count();
    let mut sorted = decision.to_vec();
    sorted.sort_by(f64::total_cmp);
    let thresholds = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1]
        .iter()
        .map(|&rate| (rate, percentile_sorted(&sorted, rate * 100.0)))
        .collect();
    Report {
        model_version,
        inputs,
        rows: decision.len(),
        offset,
        alerts,
        alert_rate: if decision.is_empty() {
            0.0
        } else {
            alerts as f64 / decision.len() as f64
        },
        anomaly_score: distribution(decision),
        labelled: labels.map(|l| labelled(&ranking, &flagged, l)),
        thresholds_for_alert_rate: thresholds,
    }
}

impl Report {
    /// The Markdown version of the report.
    pub fn to_markdown(&self, plots: &[String]) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        let _ = writeln!(s, "# Evaluation of {}\n", self.model_version);
        let _ = writeln!(s, "Inputs: {}\n", self.inputs.join(", "));
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let _ = writeln!(s, "| rows | {} |", self.rows);
        let _ = writeln!(s, "| alerts (anomaly_score < 0) | {} |", self.alerts);
        let _ = writeln!(s, "| alert rate | {:.4} |", self.alert_rate);
        let _ = writeln!(s, "| model offset | {:.6} |", self.offset);
        if let Some(l) = &self.labelled {
            let _ = writeln!(
                s,
                "| labelled anomalies | {} of {} |",
                l.positives,
                l.positives + l.negatives
            );
            let _ = writeln!(s, "| ROC-AUC | {} |", f(l.roc_auc));
            let _ = writeln!(s, "| average precision | {} |", f(l.average_precision));
            let _ = writeln!(s, "| precision at threshold | {:.4} |", l.precision);
            let _ = writeln!(s, "| recall at threshold | {:.4} |", l.recall);
            let _ = writeln!(s, "| F1 at threshold | {:.4} |", l.f1);
            let c = l.confusion;
            let _ = writeln!(
                s,
                "\n## Confusion matrix\n\n| | flagged | not flagged |\n|---|---|---|"
            );
            let _ = writeln!(
                s,
                "| anomalous | {} | {} |\n| normal | {} | {} |",
                c.tp, c.fn_, c.fp, c.tn
            );
        }
        let d = &self.anomaly_score;
        let _ = writeln!(
            s,
            "\n## anomaly_score distribution\n\n| mean | std | min | p1 | p5 | p25 | p50 | p75 | p95 | p99 | max |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            d.mean, d.std, d.min, d.p01, d.p05, d.p25, d.p50, d.p75, d.p95, d.p99, d.max
        );
        let _ = writeln!(
            s,
            "\n## Threshold for a target alert rate\n\n| alert rate | anomaly_score below |\n|---|---|"
        );
        for (rate, t) in &self.thresholds_for_alert_rate {
            let _ = writeln!(s, "| {rate} | {t:.6} |");
        }
        if !plots.is_empty() {
            let _ = writeln!(s, "\n## Plots\n");
            for p in plots {
                let _ = writeln!(s, "![{p}]({p})");
            }
        }
        s
    }
}

/// Registers a system TrueType font for plot text; `false` if none is found (plots then carry
/// no text, which keeps them working on minimal machines).
fn register_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
        ];
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // Plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn histogram(path: &Path, decision: &[f64], labels: Option<&[bool]>, text: bool) -> PlotResult {
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = decision
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    const BINS: usize = 50;
    let width = (hi - lo) / BINS as f64;
    let bin = |v: f64| (((v - lo) / width) as usize).min(BINS - 1);
    let mut counts = [[0usize; BINS]; 2];
    for (i, &v) in decision.iter().enumerate() {
        let class = labels.map_or(0, |l| usize::from(l[i]));
        counts[class][bin(v)] += 1;
    }
    // Per-class shares so a rare class stays visible next to the majority.
    let totals = [
        counts[0].iter().sum::<usize>().max(1),
        counts[1].iter().sum::<usize>().max(1),
    ];
    let share = |c: usize, b: usize| counts[c][b] as f64 / totals[c] as f64;
    let ymax = (0..BINS)
        .map(|b| share(0, b).max(share(1, b)))
        .fold(0.0, f64::max)
        * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(
                "anomaly_score by class (share of class per bin)",
                ("sans-serif", 22),
            )
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(lo..hi, 0.0..ymax.max(1e-9))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("anomaly_score (negative = flagged)")
            .y_desc("share")
            .draw()?;
    }
    let classes: &[(usize, RGBColor, &str)] = if labels.is_some() {
        &[(0, BLUE, "normal"), (1, RED, "anomalous")]
    } else {
        &[(0, BLUE, "all rows")]
    };
    for &(c, color, name) in classes {
        let series = chart.draw_series((0..BINS).map(|b| {
            let x0 = lo + b as f64 * width;
            Rectangle::new(
                [(x0, 0.0), (x0 + width, share(c, b))],
                color.mix(0.45).filled(),
            )
        }))?;
        if text {
            series.label(name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (0.0, ymax)],
        BLACK,
    )))?;
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A chart builder with the charts' margin, and (when a font was found) a caption and label
/// areas of the given sizes.
fn builder<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    text: bool,
    label_areas: (u32, u32),
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(label_areas.0)
            .y_label_area_size(label_areas.1);
    }
    builder
}

fn line_plot(
    path: &Path,
    title: &str,
    xy: (&str, &str),
    points: Vec<(f64, f64)>,
    text: bool,
) -> PlotResult {
    let root = BitMapBackend::new(path, (600, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = builder(&root, title, text, (40, 50));
    let mut chart = builder.build_cartesian_2d(0.0..1.0, 0.0..1.05)?;
    if text {
        chart.configure_mesh().x_desc(xy.0).y_desc(xy.1).draw()?;
    }
    chart.draw_series(LineSeries::new(points, RED.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

/// Writes the PNG plots into `dir` and returns their file names.
pub fn plots(dir: &Path, decision: &[f64], labels: Option<&[bool]>) -> Result<Vec<String>> {
    let text = register_font();
    let mut written = Vec::new();
    histogram(&dir.join("score_histogram.png"), decision, labels, text)
        .map_err(|e| anyhow::anyhow!("drawing the score histogram: {e}"))?;
    written.push("score_histogram.png".to_string());
    if let Some(labels) = labels.filter(|l| l.iter().any(|&x| x) && l.iter().any(|&x| !x)) {
        let ranking: Vec<f64> = decision.iter().map(|d| -d).collect();
        let c = curve(&ranking, labels);
        let roc: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
            .chain(c.iter().map(|p| (p.0, p.1)))
            .collect();
        let pr: Vec<(f64, f64)> = c.iter().map(|p| (p.3, p.2)).collect();
        line_plot(
            &dir.join("roc.png"),
            "ROC curve",
            ("false positive rate", "true positive rate"),
            roc,
            text,
        )
        .map_err(|e| anyhow::anyhow!("drawing the ROC curve: {e}"))?;
        line_plot(
            &dir.join("pr.png"),
            "Precision-recall curve",
            ("recall", "precision"),
            pr,
            text,
        )
        .map_err(|e| anyhow::anyhow!("drawing the PR curve: {e}"))?;
        written.push("roc.png".to_string());
        written.push("pr.png".to_string());
    }
    Ok(written)
}

/// Grouped bars: one group per segment (x), one bar per series, heights in [0, 1] (e.g. average
/// precision per fraud pattern, per model). A `None` height leaves a gap. Written as a PNG of
/// 1000 × 560 pixels; text only when a system font is found.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    let panel = Panel {
        title: title.to_string(),
        y_desc: y_desc.to_string(),
        groups: groups.to_vec(),
        series: series.to_vec(),
        y_max: 1.0,
    };
    panels_chart(path, (1000, 560), &[panel])
}

/// One chart of [`panels_chart`]: grouped bars on a linear scale from 0 to `y_max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Its caption.
    pub title: String,
    /// What the y axis measures.
    pub y_desc: String,
    /// One group of bars per entry, left to right.
    pub groups: Vec<String>,
    /// (legend, one height per group; None leaves a gap).
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// Top of the scale (heights above it are cut).
    pub y_max: f64,
}

/// Grouped-bar panels stacked vertically in one PNG of `size` pixels (the same drawing as
/// [`bar_chart`], e.g. latency percentiles at 1, 16 and 150 connections).
pub fn panels_chart(path: &Path, size: (u32, u32), panels: &[Panel]) -> Result<()> {
    let text = register_font();
    let draw = || -> PlotResult {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, panel) in root
            .split_evenly((panels.len().max(1), 1))
            .iter()
            .zip(panels)
        {
            grouped_bars(area, panel, text)?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

fn grouped_bars(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    text: bool,
) -> PlotResult {
    const COLORS: [RGBColor; 6] = [
        RGBColor(0x4c, 0x72, 0xb0),
        RGBColor(0xdd, 0x84, 0x52),
        RGBColor(0x55, 0xa8, 0x68),
        RGBColor(0xc4, 0x4e, 0x52),
        RGBColor(0x81, 0x72, 0xb3),
        RGBColor(0x93, 0x78, 0x60),
    ];
    let Panel {
        title,
        y_desc,
        groups,
        series,
        y_max,
    } = panel;
    let y_max = if y_max.is_finite() && *y_max > 0.0 {
        *y_max
    } else {
        1.0
    };
    let mut builder = builder(area, title, text, (45, 60));
    let n = groups.len().max(1);
    // Headroom above the scale for the legend, so it never hides a bar.
    let mut chart = builder.build_cartesian_2d(
        0.0..n as f64,
        0.0..y_max * (1.0 + 0.08 * (series.len() as f64 + 1.0)),
    )?;
    if text {
        let names = groups.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&move |x: &f64| {
                // Labels at the middle of each group only.
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc.as_str())
            .draw()?;
    }
    let width = 0.8 / series.len().max(1) as f64;
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars = values.iter().enumerate().filter_map(|(g, v)| {
            let v = (*v)?;
            let x0 = g as f64 + 0.1 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, v.clamp(0.0, y_max))],
                color.filled(),
            ))
        });
        let drawn = chart.draw_series(bars)?;
        if text {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// A line per series over a shared x axis (e.g. PSI and alert rate per hour), 1000 × 560
/// pixels, with the same look as the other charts.
pub fn lines_chart(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let text = register_font();
    let draw = || -> PlotResult {
        let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let points = series.iter().flat_map(|(_, p)| p.iter());
        let (x0, x1, y1) = points.fold((f64::MAX, f64::MIN, 0.0f64), |(a, b, c), &(x, y)| {
            (a.min(x), b.max(x), c.max(y))
        });
        // One hour (or none) still gets an axis around it.
        let (x0, x1) = if x0 < x1 {
            (x0, x1)
        } else if x0 <= x1 {
            (x0 - 1.0, x1 + 1.0)
        } else {
            (0.0, 1.0)
        };
        let mut builder = builder(&root, title, text, (45, 60));
        let mut chart = builder.build_cartesian_2d(x0..x1, 0.0..(y1 * 1.15).max(1e-9))?;
        if text {
            chart
                .configure_mesh()
                .x_desc(axes.0)
                .y_desc(axes.1)
                .draw()?;
        }
        for (k, (name, points)) in series.iter().enumerate() {
            let color = [RED, BLUE, GREEN, BLACK][k % 4];
            // Points as well as the line, so a lone hour shows.
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            let drawn =
                chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            if text {
                drawn.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// The panels of `scripts/bench-predict.sh`'s output: one per connection count, one group per
/// measured line (host, settings, what), p50 / p90 / p99 in µs. Lines that are not
/// measurements are skipped.
pub fn bench_predict_panels(output: &str) -> Vec<Panel> {
    let mut section = String::new();
    // connections -> (group names, [p50, p90, p99] per group)
    let mut by_c: std::collections::BTreeMap<u32, (Vec<String>, Vec<[f64; 3]>)> =
        std::collections::BTreeMap::new();
    for line in output.lines() {
        if !line.starts_with(' ') && line.trim_end().ends_with(':') {
            // "harness, recommended (--max-instance-reuse-count 100000):" -> "harness rec."
            let head = line.trim_end().trim_end_matches(':');
            let head = head.split(" (").next().unwrap_or(head);
            section = head
                .replace(", defaults", "")
                .replace(", recommended", " rec.");
            if section.starts_with("floor") {
                section = "floor".into();
            }
            continue;
        }
        let Some((label, rest)) = line.trim_start().split_once(" c=") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let Some(c) = words.first().and_then(|w| w.parse::<u32>().ok()) else {
            continue;
        };
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let (Some(p50), Some(p90), Some(p99)) = (after("p50"), after("p90"), after("p99")) else {
            continue;
        };
        let label = label.trim().replace(" (anchor)", "");
        let name = if section == "floor" || label == "floor" {
            "floor".to_string()
        } else {
            format!("{section} {label}")
        };
        let entry = by_c.entry(c).or_default();
        entry.0.push(name);
        entry.1.push([p50, p90, p99]);
    }
    by_c.into_iter()
        .map(|(c, (groups, values))| {
            let y_max = values.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
            Panel {
                title: format!(
                    "POST /api/predict at {c} connection{}: latency percentiles",
                    if c == 1 { "" } else { "s" }
                ),
                y_desc: "µs".into(),
                groups,
                series: ["p50", "p90", "p99"]
                    .iter()
                    .enumerate()
                    .map(|(k, name)| {
                        (
                            name.to_string(),
                            values.iter().map(|v| Some(v[k])).collect(),
                        )
                    })
                    .collect(),
                y_max: y_max * 1.05,
            }
        })
        .collect()
}

/// Writes `report.json`, `report.md` and the plots into `dir`.
pub fn write(
    dir: &Path,
    report: &Report,
    decision: &[f64],
    labels: Option<&[bool]>,
    with_plots: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let plots = if with_plots {
        plots(dir, decision, labels)?
    } else {
        Vec::new()
    };
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing report.json in {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), report.to_markdown(&plots))
        .with_context(|| format!("writing report.md in {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }

    const BENCH_OUTPUT: &str = "\
machine: 2 cores, AMD EPYC; load 1.2 1.3 1.4
anchor (model-format on data/model.sfm, native): score 2.8 us explain 61.8 us
floor (plain hyper server, constant body, no WebAssembly):
  floor                      c=1   p50     62 us  p90     80 us  p99    120 us  p99.9    300 us   15000 req/s  errors 0  rss 5/6/6 MB  [load 1.0 1.0 1.0]
  floor                      c=16  p50    400 us  p90    600 us  p99    900 us  p99.9   2000 us   38000 req/s  errors 0  rss 5/6/6 MB  [load 1.0 1.0 1.0]
harness, defaults:
  health (anchor)            c=1   p50    110 us  p90    150 us  p99    300 us  p99.9    800 us    8000 req/s  errors 0  rss 50/60/60 MB  [load 1.1 1.0 1.0]
  explained                  c=1   p50    404 us  p90    500 us  p99    900 us  p99.9   3000 us    2300 req/s  errors 0  rss 50/60/60 MB  [load 1.1 1.0 1.0]
  explained                  c=16  p50   4000 us  p90   6000 us  p99   9000 us  p99.9  12000 us    3500 req/s  errors 0  rss 50/80/70 MB  [load 1.1 1.0 1.0]
harness, recommended (--max-instance-reuse-count 100000):
  explained                  c=1   p50    410 us  p90    520 us  p99    950 us  p99.9   3100 us    2200 req/s  errors 0  rss 50/60/60 MB  [load 1.1 1.0 1.0]
";

    #[test]
    fn bench_predict_output_becomes_one_panel_per_connection_count() {
        let panels = bench_predict_panels(BENCH_OUTPUT);
        assert_eq!(panels.len(), 2);
        let one = &panels[0];
        assert_eq!(
            one.groups,
            [
                "floor",
                "harness health",
                "harness explained",
                "harness rec. explained"
            ]
        );
        assert_eq!(one.series[0].0, "p50");
        assert_eq!(
            one.series[0].1,
            [Some(62.0), Some(110.0), Some(404.0), Some(410.0)]
        );
        assert_eq!(one.series[2].1[2], Some(900.0));
        assert!(panels[1].title.contains("16 connections"));
        assert_eq!(panels[1].groups, ["floor", "harness explained"]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.png");
        panels_chart(&path, (1000, 1120), &panels).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), (1000, 1120));
    }

    #[test]
    fn lines_chart_draws_a_png_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drift.png");
        let psi: Vec<(f64, f64)> = (0..48)
            .map(|h| (f64::from(h) - 47.0, 0.01 * f64::from(h % 7)))
            .collect();
        lines_chart(
            &path,
            "drift",
            ("hours", "PSI"),
            &[("PSI".into(), psi), ("empty".into(), Vec::new())],
        )
        .unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), (1000, 560));
        // One hour: an axis around it and a visible point (not an empty frame).
        let one = dir.path().join("one.png");
        lines_chart(
            &one,
            "one hour",
            ("hours", "rate"),
            &[("alert rate".into(), vec![(0.0, 0.12)])],
        )
        .unwrap();
        if let Some(keep) = std::env::var_os("SFE_KEEP_CHART") {
            std::fs::copy(&one, keep).unwrap();
        }
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        // Scores (higher = more anomalous) and labels; the model flags the top three.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let labels = [true, false, true, false, false, true];
        // Positive ranks (ascending, 1-based): 6, 4, 1 → U = 11 - 6 = 5; AUC = 5 / 9.
        assert!((roc_auc(&scores, &labels).unwrap() - 5.0 / 9.0).abs() < 1e-12);
        // AP = 1/3·1 + 1/3·2/3 + 1/3·3/6 = 13/18.
        assert!((average_precision(&scores, &labels).unwrap() - 13.0 / 18.0).abs() < 1e-12);
        let flagged = [true, true, true, false, false, false];
        let l = labelled(&scores, &flagged, &labels);
        assert_eq!(
            l.confusion,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        assert!((l.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((l.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((l.f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half() {
        // One positive tied with one negative: AUC 0.5, AP = 1/2.
        assert_eq!(roc_auc(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(average_precision(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(average_precision(&[1.0], &[false]), None);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let d = distribution(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((d.min, d.max, d.mean), (1.0, 4.0, 2.5));
        assert!((d.p50 - 2.5).abs() < 1e-12);
        assert!((d.p25 - 1.75).abs() < 1e-12);
    }
}
