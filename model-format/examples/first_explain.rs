//! Cost of the first explanation on a freshly decoded model: building the TreeSHAP tables on
//! first use, against installing tables serialized beforehand, with the checksum or without
//! (what the worker does). Each model is decoded just before, so caches are as cold as after
//! a fresh decode.
//!
//! `cargo run --release -p model-format --example first_explain [model.sfm]`
use std::time::Instant;

use model_format::{Model, TablesTrust};

fn main() {
    let path = std::env::args().nth(1).unwrap_or("data/model.sfm".into());
    let bytes = std::fs::read(&path).unwrap();
    let row = [42.5, 14.0, 2.0, 1.0, 0.0];
    let mut phi = [0.0; 5];
    let n = 200;
    let serialized = Model::from_bytes(&bytes).unwrap().explanation_tables();
    // 8-byte aligned and 'static like the worker's embedded copy, so it is viewed in place.
    let mut words = vec![0u64; serialized.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..serialized.len()]
        .copy_from_slice(&serialized);
    let tables: &'static [u8] = &bytemuck::cast_slice(Vec::leak(words))[..serialized.len()];

    let (mut first, mut second, mut install, mut installed_first) = (0.0, 0.0, 0.0, 0.0);
    let (mut trusted, mut trusted_first) = (0.0, 0.0);
    for _ in 0..n {
        let m = Model::from_bytes(&bytes).unwrap();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        first += t.elapsed().as_secs_f64();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        second += t.elapsed().as_secs_f64();

        let m = Model::from_bytes(&bytes).unwrap();
        let t = Instant::now();
        m.install_explanation_tables(tables, TablesTrust::Untrusted)
            .unwrap();
        install += t.elapsed().as_secs_f64();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        installed_first += t.elapsed().as_secs_f64();

        let m = Model::from_bytes(&bytes).unwrap();
        let t = Instant::now();
        m.install_explanation_tables(tables, TablesTrust::IntegrityKnown)
            .unwrap();
        trusted += t.elapsed().as_secs_f64();
        let t = Instant::now();
        m.explain(&row, &mut phi).unwrap();
        trusted_first += t.elapsed().as_secs_f64();
    }
    let us = |s: f64| s * 1e6 / f64::from(n);
    // The checksum share of installing, on warm caches.
    let t = Instant::now();
    let mut h = 0;
    for _ in 0..n {
        h ^= xxhash_rust::xxh3::xxh3_64(std::hint::black_box(tables));
    }
    let checksum = t.elapsed().as_secs_f64();
    std::hint::black_box(h);
    println!(
        "tables: {} bytes for {} trees",
        tables.len(),
        Model::from_bytes(&bytes).unwrap().forest().trees().len()
    );
    println!(
        "built lazily: first explain {:.1} us, second {:.1} us",
        us(first),
        us(second)
    );
    println!(
        "installed: install {:.1} us (of which checksum {:.1} us warm), first explain {:.1} us",
        us(install),
        us(checksum),
        us(installed_first)
    );
    println!(
        "installed trusted (no checksum): install {:.1} us, first explain {:.1} us",
        us(trusted),
        us(trusted_first)
    );
}
