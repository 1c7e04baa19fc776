//! Cost of the first explanation on a freshly decoded model (builds the TreeSHAP tables).
use std::time::Instant;
fn main() {
    let bytes = std::fs::read("data/model.sfm").unwrap();
    let row = [42.5, 14.0, 2.0, 1.0, 0.0];
    let mut phi = [0.0; 5];
    let (mut first, mut second, n) = (0.0, 0.0, 200);
    for _ in 0..n {
        let m = model_format::Model::from_bytes(&bytes).unwrap();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        first += t.elapsed().as_secs_f64();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        second += t.elapsed().as_secs_f64();
    }
    println!(
        "first explain {:.1} us, second {:.1} us",
        first * 1e6 / n as f64,
        second * 1e6 / n as f64
    );
}
