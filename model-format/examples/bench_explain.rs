//! Prints µs/row for `score` and `explain`, and `from_bytes` time, on a realistic forest
//! (100 trees, ψ = 256, 5 features) and on a model file (the first argument, default
//! `data/model.sfm` from the working directory) when it decodes. Decode time
//! is `Model::from_bytes` (checksum, parsing, full validation) plus dropping the model; the
//! checksum alone is shown beside it, then the two ways an embedded file decodes:
//! `Model::from_static_bytes` (full validation, node records used in place) and
//! `FileTrust::DecodedBefore` (what the worker does at an instance's start). The `tables` line
//! is what the explanation tables cost an instance: built from the model, or hashed (as a
//! registry model's are), decoded and installed.
//!
//! cargo run --release --example bench_explain [MODEL]

#[path = "../tests/common/grow.rs"]
mod grow;

use model_format::{FileTrust, Model, ModelId, Node};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `f` over every row until at least `min` has passed; returns µs per call (best of 5).
fn per_row(rows: &[Vec<f64>], min: Duration, mut f: impl FnMut(&[f64])) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < min {
            for r in rows {
                f(black_box(r));
            }
            calls += rows.len() as u64;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / calls as f64);
    }
    best
}

fn bench(label: &str, model: &Model, rows: &[Vec<f64>]) {
    let trees = model.forest().trees();
    let nodes = model.forest().node_count();
    let depth = trees.iter().map(|t| depth(t.nodes())).max().unwrap_or(0);
    println!(
        "{label}: {} trees, {} features, {:.1} nodes/tree, max depth {depth}, ψ = {}",
        trees.len(),
        model.features().len(),
        nodes as f64 / trees.len() as f64,
        model.forest().max_samples()
    );
    let min = Duration::from_millis(300);
    let score = per_row(rows, min, |r| {
        black_box(model.score(r).unwrap());
    });
    let mut phi = vec![0.0; model.features().len()];
    let explain = per_row(rows, min, |r| {
        black_box(model.explain(r, &mut phi).unwrap());
    });
    // Batch jobs (`trainer score --explain`): every row at once, one core, same bits.
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let mut phis = vec![0.0; flat.len()];
    let mut out = Vec::with_capacity(rows.len());
    let mut explain_rows = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < min {
            out.clear();
            model
                .explain_rows(black_box(&flat), &mut phis, &mut out)
                .unwrap();
            calls += rows.len() as u64;
        }
        explain_rows = explain_rows.min(start.elapsed().as_secs_f64() * 1e6 / calls as f64);
    }
    let bytes = model.to_bytes().unwrap();
    // An embedded file: 'static and 8-byte aligned.
    let words: &'static mut [u64] = vec![0u64; bytes.len().div_ceil(8)].leak();
    let embedded = &mut bytemuck::cast_slice_mut::<u64, u8>(words)[..bytes.len()];
    embedded.copy_from_slice(&bytes);
    let embedded: &'static [u8] = embedded;
    let checksum = ModelId::of(&bytes).unwrap().checksum;
    let best_of = |f: &dyn Fn()| {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            let n = 200;
            for _ in 0..n {
                f();
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        }
        best
    };
    let decode = best_of(&|| drop(black_box(Model::from_bytes(black_box(&bytes)).unwrap())));
    let crc = best_of(&|| {
        black_box(ModelId::of(black_box(&bytes)).unwrap());
    });
    let in_place = best_of(&|| {
        drop(black_box(
            Model::from_static_bytes(black_box(embedded), FileTrust::Untrusted).unwrap(),
        ));
    });
    let prechecked = best_of(&|| {
        drop(black_box(
            Model::from_static_bytes(black_box(embedded), FileTrust::DecodedBefore(checksum))
                .unwrap(),
        ));
    });
    println!("  score    {score:8.2} µs/row");
    println!(
        "  explain  {explain:8.2} µs/row  ({:.1}× score)",
        explain / score
    );
    println!(
        "  explain_rows {explain_rows:6.2} µs/row  ({:.2}× explain; {} rows at a time with AVX2, \
         else one by one)",
        explain / explain_rows,
        model_format::explain::ROWS,
    );
    if let Some(b) = model.supervised() {
        // The supervised classifier beside the forest: what an explained prediction adds.
        let fraud = per_row(rows, min, |r| {
            black_box(model.score_fraud(r).unwrap());
        });
        let mut phi = vec![0.0; model.features().len() + 1];
        let fraud_explain = per_row(rows, min, |r| {
            black_box(model.explain_fraud(r, &mut phi).unwrap());
        });
        println!(
            "  supervised ({} trees, {} nodes): score_fraud {fraud:8.2} µs/row, explain_fraud \
             {fraud_explain:8.2} µs/row (the forest scored, the supervised model scored and \
             explained)",
            b.trees().len(),
            b.node_count(),
        );
        // What a server sees: between two requests the rest of its work evicts the tables
        // from the caches. Both explanations of an explained prediction, against the forest's
        // alone, each call timed with the caches flushed before it (a 16 MiB walk).
        let mut forest_phi = vec![0.0; model.features().len()];
        let mut evict = vec![0u8; 16 << 20];
        let mut cold = |f: &mut dyn FnMut(&[f64])| {
            let mut times = Vec::with_capacity(rows.len().min(400));
            for (i, r) in rows.iter().take(400).enumerate() {
                for line in evict.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(i as u8);
                }
                black_box(&evict);
                let start = Instant::now();
                f(black_box(r));
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let forest_cold = cold(&mut |r| {
            black_box(model.explain(r, &mut forest_phi).unwrap());
        });
        let both_cold = cold(&mut |r| {
            black_box(
                model
                    .explain_with_fraud(r, &mut forest_phi, &mut phi)
                    .unwrap(),
            );
        });
        println!(
            "  caches flushed before each row (median): explain {forest_cold:8.2} µs, \
             explain_with_fraud {both_cold:8.2} µs (+{:.2} µs for the supervised model)",
            both_cold - forest_cold
        );
    }
    // What a fresh instance pays for the explanation tables: building them from the decoded
    // model, against installing serialized ones (hashed first, as a registry model's are).
    let tables: &'static [u8] = Vec::leak(model.explanation_tables());
    // Milliseconds each: best of 5 single builds.
    let build_tables = (0..5)
        .map(|_| {
            let m = Model::from_static_bytes(embedded, FileTrust::DecodedBefore(checksum)).unwrap();
            let start = Instant::now();
            black_box(m.explanation_tables());
            start.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min);
    let hash_tables = best_of(&|| {
        black_box(xxhash_rust::xxh3::xxh3_64(black_box(tables)));
    });
    let install_tables = best_of(&|| {
        let m = Model::from_static_bytes(embedded, FileTrust::DecodedBefore(checksum)).unwrap();
        m.install_explanation_tables(tables, model_format::TablesTrust::CheckedForThisModel)
            .unwrap();
        black_box(m);
    });
    println!(
        "  tables {} bytes: build {build_tables:8.1} µs, hash {hash_tables:8.1} µs, decode + install {install_tables:8.1} µs",
        tables.len()
    );
    println!("  decode   {decode:8.1} µs ({} bytes)", bytes.len());
    println!("    of which checksum {crc:8.1} µs (ModelId::of)");
    println!("  decode in place      {in_place:8.1} µs (from_static_bytes, full validation)");
    println!("  decode prechecked    {prechecked:8.1} µs (from_static_bytes, DecodedBefore)");
}

/// Deepest leaf (splits on the path).
fn depth(nodes: &[Node]) -> usize {
    let mut stack = vec![(0usize, 0usize)];
    let mut max = 0;
    while let Some((i, d)) = stack.pop() {
        match nodes[i] {
            Node::Leaf { .. } => max = max.max(d),
            Node::Split { right, .. } => {
                stack.push((i + 1, d + 1));
                stack.push((right as usize, d + 1));
            }
        }
    }
    max
}

fn main() {
    let rows = grow::synthetic_rows(4000, 11);
    let model = grow::grow_model(&rows, 100, 256, 12);
    let sample: Vec<Vec<f64>> = rows.iter().step_by(4).cloned().collect();
    bench("synthetic forest", &model, &sample);

    // A run-time path: a compile-time one would name whichever checkout built the binary.
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/model.sfm".into());
    match std::fs::read(&path).map(|b| Model::from_bytes(&b)) {
        Ok(Ok(model)) => {
            // Rows around the training distribution: mean ± 2 scale per feature.
            let mut rng = grow::SplitMix(5);
            let s = model.scaler();
            let rows: Vec<Vec<f64>> = (0..1000)
                .map(|_| {
                    (0..s.len())
                        .map(|j| s.mean()[j] + s.scale()[j] * rng.normal())
                        .collect()
                })
                .collect();
            bench(&path, &model, &rows);
        }
        Ok(Err(e)) => println!("{path}: does not decode: {e}"),
        Err(e) => println!("{path}: {e}"),
    }
}
