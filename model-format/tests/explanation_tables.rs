//! Serialized explanation tables (`Model::explanation_tables` / `install_explanation_tables`):
//! installed tables explain to the same bits as tables built on first use, and bytes that are
//! corrupt or belong to another model are rejected with a typed error, leaving the model as it was.

mod common;

use common::{leaf, split};

use common::grow::{SplitMix, grow_model, synthetic_rows};
use model_format::{
    ExplainError, FileTrust, Forest, Model, Node, Scaler, TablesError, TablesTrust, Tree,
};

/// A `'static` copy of `bytes` starting `offset` bytes after an 8-byte boundary.
fn leak_at(bytes: &[u8], offset: usize) -> &'static [u8] {
    let words: &'static mut [u64] = vec![0u64; (bytes.len() + offset).div_ceil(8)].leak();
    let buf: &'static mut [u8] = bytemuck::cast_slice_mut(words);
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    &buf[offset..offset + bytes.len()]
}

/// A freshly decoded copy: nothing built yet.
fn fresh(model: &Model) -> Model {
    Model::from_bytes(&model.to_bytes().unwrap()).unwrap()
}

fn phi_bits(model: &Model, row: &[f64]) -> (Vec<u64>, u64, u64) {
    let mut phi = vec![0.0; row.len()];
    let e = model.explain(row, &mut phi).unwrap();
    (
        phi.iter().map(|v| v.to_bits()).collect(),
        e.expected_value.to_bits(),
        e.score.mean_path_length.to_bits(),
    )
}

fn rows_for(rows: &[Vec<f64>], seed: u64) -> Vec<Vec<f64>> {
    // Training-like rows plus far-off ones, so hot and cold edges both occur.
    let mut rng = SplitMix(seed);
    let mut out: Vec<Vec<f64>> = rows.iter().step_by(5).cloned().collect();
    for _ in 0..200 {
        let base = &rows[rng.below(rows.len())];
        out.push(base.iter().map(|v| v * (rng.unit() * 4.0 - 1.0)).collect());
    }
    out
}

fn assert_same_explanations(built: &Model, installed: &Model, rows: &[Vec<f64>]) {
    assert_eq!(
        built.expected_value().to_bits(),
        installed.expected_value().to_bits()
    );
    for (a, b) in built
        .forest()
        .trees()
        .iter()
        .zip(installed.forest().trees())
    {
        assert_eq!(
            a.expected_path_length().to_bits(),
            b.expected_path_length().to_bits()
        );
    }
    for row in rows {
        assert_eq!(
            phi_bits(built, row),
            phi_bits(installed, row),
            "row {row:?}"
        );
    }
}

#[test]
fn installed_tables_explain_bit_identically() {
    let rows = synthetic_rows(3000, 21);
    let built = grow_model(&rows, 100, 256, 5);
    let tables = fresh(&built).explanation_tables();
    let check = rows_for(&rows, 9);
    // Aligned (viewed in place) and misaligned (copied) bytes give the same results.
    for offset in [0, 1, 4] {
        let installed = fresh(&built);
        installed
            .install_explanation_tables(leak_at(&tables, offset), TablesTrust::Untrusted)
            .unwrap();
        assert_same_explanations(&built, &installed, &check);
    }
    // Serializing installed tables gives the same bytes back.
    let installed = fresh(&built);
    installed
        .install_explanation_tables(leak_at(&tables, 0), TablesTrust::Untrusted)
        .unwrap();
    assert!(installed.prepare_explanations());
    assert_eq!(installed.explanation_tables(), tables);
}

/// Tables as a key-value store hands them over, in parts cut anywhere (inside the header, a
/// split record, a tree's arrays, on 8-byte boundaries or not): the same bits as built tables
/// for every trust level, and a flipped byte in a later part is caught by the checksum.
#[test]
fn tables_in_parts_explain_bit_identically() {
    let rows = synthetic_rows(3000, 22);
    let built = grow_model(&rows, 40, 256, 7);
    let tables = fresh(&built).explanation_tables();
    let check = rows_for(&rows, 10);
    let n = tables.len();
    for cuts in [
        vec![n / 2],
        vec![8, 100, n / 3 + 3, n - 1],
        vec![4096, 2 * 4096, 3 * 4096],
        (1..n).step_by(n / 7 + 1).collect(),
    ] {
        let mut parts = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&n]) {
            parts.push(leak_at(&tables[from..cut], 0));
            from = cut;
        }
        for trust in [
            TablesTrust::Untrusted,
            TablesTrust::IntegrityKnown,
            TablesTrust::CheckedForThisModel,
        ] {
            let installed = fresh(&built);
            installed
                .install_explanation_table_parts(&parts, trust)
                .unwrap_or_else(|e| panic!("cuts {cuts:?}, {trust:?}: {e}"));
            assert_same_explanations(&built, &installed, &check);
        }
        fresh(&built)
            .verify_explanation_table_parts(&parts)
            .unwrap();
        // One byte of the last part's floats flipped: refused, the model builds its own.
        let last = cuts[cuts.len() - 1];
        let mut bad = tables.clone();
        bad[last] ^= 0x40;
        let mut bad_parts = parts.clone();
        let end = bad_parts.len() - 1;
        bad_parts[end] = leak_at(&bad[last..], 0);
        let target = fresh(&built);
        let result = target.install_explanation_table_parts(&bad_parts, TablesTrust::Untrusted);
        assert!(
            matches!(result, Err(TablesError::Checksum { .. })),
            "cuts {cuts:?}: {result:?}"
        );
        assert_same_explanations(&built, &target, &check[..20]);
    }
}

#[test]
fn the_embedded_model_round_trips() {
    let bytes = include_bytes!("../../data/model.sfm");
    let built = Model::from_bytes(bytes).unwrap();
    let tables = built.explanation_tables();
    let installed = Model::from_bytes(bytes).unwrap();
    installed
        .install_explanation_tables(leak_at(&tables, 0), TablesTrust::Untrusted)
        .unwrap();
    let rows = synthetic_rows(2000, 3);
    assert_same_explanations(&built, &installed, &rows_for(&rows, 4));
}

/// The worker's start: the model and its tables both embedded and checked at build time, so
/// neither is walked again; explanations and scores are those of a fully checked load.
#[test]
fn prechecked_model_and_tables_explain_bit_identically() {
    let bytes = include_bytes!("../../data/model.sfm");
    let built = Model::from_bytes(bytes).unwrap();
    let tables = built.explanation_tables();
    let checksum = model_format::ModelId::of(bytes).unwrap().checksum;
    for offset in [0, 1] {
        let installed =
            Model::from_static_bytes(leak_at(bytes, offset), FileTrust::DecodedBefore(checksum))
                .unwrap();
        assert_eq!(installed, built);
        installed
            .install_explanation_tables(leak_at(&tables, offset), TablesTrust::CheckedForThisModel)
            .unwrap();
        installed
            .verify_explanation_tables(leak_at(&tables, 0))
            .unwrap();
        let rows = synthetic_rows(2000, 5);
        assert_same_explanations(&built, &installed, &rows_for(&rows, 6));
    }
    // The header and sizes are still checked: tables of another size are refused.
    let installed =
        Model::from_static_bytes(leak_at(bytes, 0), FileTrust::DecodedBefore(checksum)).unwrap();
    let short = &tables[..tables.len() - 8];
    assert!(matches!(
        installed.install_explanation_tables(leak_at(short, 0), TablesTrust::CheckedForThisModel),
        Err(TablesError::Length { .. })
    ));
    // A checksum other than the file's is refused before anything is trusted.
    assert!(
        Model::from_static_bytes(leak_at(bytes, 0), FileTrust::DecodedBefore(checksum ^ 1))
            .is_err()
    );
}

fn expect_rejected(model: &Model, bytes: &[u8]) -> TablesError {
    let target = fresh(model);
    match target.install_explanation_tables(leak_at(bytes, 0), TablesTrust::Untrusted) {
        Ok(()) => panic!("tampered tables were installed"),
        Err(e) => e,
    }
}

#[test]
fn corrupt_tables_are_rejected() {
    let rows = synthetic_rows(2000, 31);
    let model = grow_model(&rows, 20, 256, 7);
    let tables = model.explanation_tables();
    // One flipped bit anywhere: every header byte, then a spread of positions.
    let positions = (0..48).chain((48..tables.len()).step_by(97));
    for at in positions {
        for bit in [0, 7] {
            let mut bad = tables.clone();
            bad[at] ^= 1 << bit;
            expect_rejected(&model, &bad);
        }
    }
    for len in [0, 7, 47, 48, tables.len() - 8, tables.len() - 1] {
        assert!(
            matches!(
                expect_rejected(&model, &tables[..len]),
                TablesError::Length { .. } | TablesError::Magic
            ),
            "truncated to {len}"
        );
    }
    let mut longer = tables.clone();
    longer.extend_from_slice(&[0; 8]);
    assert!(matches!(
        expect_rejected(&model, &longer),
        TablesError::Length { .. }
    ));
    assert_eq!(
        expect_rejected(&model, b"SFESHAP\0"),
        TablesError::Length {
            expected: 48,
            found: 8
        }
    );

    // A failed install leaves the model working, building its own tables.
    let target = fresh(&model);
    let mut bad = tables.clone();
    bad[100] ^= 1;
    assert!(
        target
            .install_explanation_tables(leak_at(&bad, 0), TablesTrust::Untrusted)
            .is_err()
    );
    assert_same_explanations(&model, &target, &rows_for(&rows, 1));
}

/// Without the checksum, structure and binding are still checked; corrupted floats go
/// through (explanations change, nothing panics) and `verify_explanation_tables` catches them.
#[test]
fn trusted_install_checks_structure_and_verify_checks_the_rest() {
    let rows = synthetic_rows(2000, 51);
    let model = grow_model(&rows, 30, 256, 9);
    let tables = model.explanation_tables();
    let check = rows_for(&rows, 2);
    let trusted = fresh(&model);
    trusted
        .install_explanation_tables(leak_at(&tables, 0), TablesTrust::IntegrityKnown)
        .unwrap();
    assert_same_explanations(&model, &trusted, &check);
    assert_eq!(
        trusted.verify_explanation_tables(leak_at(&tables, 0)),
        Ok(())
    );

    // A flipped bit in the last float: accepted, visible in φ, caught by verify.
    let mut bad = tables.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let bad: &'static [u8] = leak_at(&bad, 0);
    let target = fresh(&model);
    target
        .install_explanation_tables(bad, TablesTrust::IntegrityKnown)
        .unwrap();
    assert!(
        check
            .iter()
            .any(|row| phi_bits(&model, row) != phi_bits(&target, row))
    );
    assert!(matches!(
        model.verify_explanation_tables(bad),
        Err(TablesError::Checksum { .. })
    ));

    // Structure and binding without the checksum: a wrong split, another model's covers.
    let steps_at = 48 + 16 * model.forest().trees().len();
    let mut bad = tables.clone();
    bad[steps_at + 4..steps_at + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
    let target = fresh(&model);
    assert_eq!(
        target.install_explanation_tables(leak_at(&bad, 0), TablesTrust::IntegrityKnown),
        Err(TablesError::Step { tree: 0, step: 0 })
    );
    let mut bad = tables.clone();
    bad[24] ^= 1;
    assert_eq!(
        target.install_explanation_tables(leak_at(&bad, 0), TablesTrust::IntegrityKnown),
        Err(TablesError::Mismatch("leaf covers"))
    );
    for len in [47, tables.len() - 8] {
        assert!(matches!(
            target.install_explanation_tables(
                &leak_at(&tables, 0)[..len],
                TablesTrust::IntegrityKnown
            ),
            Err(TablesError::Length { .. })
        ));
    }
    assert_same_explanations(&model, &target, &check);
}

/// Bytes that pass the checksum (recomputed by a forger) but not the structural checks.
#[test]
fn forged_steps_are_rejected() {
    let rows = synthetic_rows(2000, 41);
    let model = grow_model(&rows, 10, 256, 8);
    let tables = model.explanation_tables();
    let reseal = |mut b: Vec<u8>| {
        let sum = xxhash_rust::xxh3::xxh3_64(&b[48..]);
        b[32..40].copy_from_slice(&sum.to_le_bytes());
        b
    };
    assert_eq!(reseal(tables.clone()), tables);
    let steps_at = 48 + 16 * model.forest().trees().len();
    // Step fields: node, right, prev (u32), threshold (f32), feature, pad (u16).
    for (field, value) in [
        (0, 7u32),         // node
        (4, 1_000_000),    // right child out of range
        (8, 1_000_000),    // flag slot out of range
        (12, 0x7fc0_0000), // threshold
        (16, 9),           // feature (and pad)
    ] {
        let mut bad = tables.clone();
        bad[steps_at + field..steps_at + field + 4].copy_from_slice(&value.to_le_bytes());
        assert!(
            matches!(
                expect_rejected(&model, &reseal(bad)),
                TablesError::Step { tree: 0, step: 0 }
            ),
            "field at {field}"
        );
    }
    // A non-finite expected path length.
    let mut bad = tables.clone();
    bad[48 + 8..48 + 16].copy_from_slice(&f64::NAN.to_le_bytes());
    assert_eq!(
        expect_rejected(&model, &reseal(bad)),
        TablesError::RootValue { tree: 0 }
    );
}

fn model(m: usize, trees: Vec<Vec<Node>>) -> Model {
    let trees = trees.into_iter().map(|t| Tree::new(t).unwrap()).collect();
    let names = (0..m).map(|i| format!("f{i}")).collect();
    let scaler = Scaler::new(vec![0.0; m], vec![1.0; m]).unwrap();
    Model::new(
        names,
        scaler,
        Forest::new(trees, 256, -0.5).unwrap(),
        vec![],
    )
    .unwrap()
}

#[test]
fn tables_of_another_model_are_rejected() {
    let a = model(2, vec![vec![split(0, 0.5, 2), leaf(3), leaf(5)]]);
    // Same splits, other covers: the tables' cover ratios and leaf values would be wrong.
    let b = model(2, vec![vec![split(0, 0.5, 2), leaf(4), leaf(5)]]);
    let c = model(2, vec![vec![split(1, 0.5, 2), leaf(3), leaf(5)]]);
    let d = model(
        2,
        vec![vec![split(0, 0.5, 2), leaf(3), leaf(5)], vec![leaf(8)]],
    );
    let tables = a.explanation_tables();
    assert_eq!(
        expect_rejected(&b, &tables),
        TablesError::Mismatch("leaf covers")
    );
    assert!(matches!(
        expect_rejected(&c, &tables),
        TablesError::Step { tree: 0, step: 0 }
    ));
    assert_eq!(
        expect_rejected(&d, &tables),
        TablesError::Mismatch("tree count")
    );
    let installed = fresh(&a);
    installed
        .install_explanation_tables(leak_at(&tables, 0), TablesTrust::Untrusted)
        .unwrap();
    assert_same_explanations(&a, &installed, &[vec![0.0, 1.0], vec![1.0, 0.0]]);
}

/// Leaf-only forests have no steps; forests too feature-rich to explain keep their error.
#[test]
fn edge_cases_install() {
    let stump = model(1, vec![vec![leaf(7)], vec![leaf(3)]]);
    let installed = fresh(&stump);
    installed
        .install_explanation_tables(
            leak_at(&stump.explanation_tables(), 0),
            TablesTrust::Untrusted,
        )
        .unwrap();
    assert_same_explanations(&stump, &installed, &[vec![0.25]]);

    // A chain splitting on 65 distinct features: one path with more than MAX_PATH_FEATURES.
    let m = 65;
    let mut nodes = Vec::new();
    for f in 0..m {
        // Left child: a leaf; right child: the next split (or the last leaf).
        nodes.push(split(f as u16, 0.0, 2 * (f as u32 + 1)));
        nodes.push(leaf(1));
    }
    nodes.push(leaf(1));
    let deep = model(m, vec![nodes]);
    assert!(!deep.prepare_explanations());
    let installed = fresh(&deep);
    installed
        .install_explanation_tables(
            leak_at(&deep.explanation_tables(), 0),
            TablesTrust::Untrusted,
        )
        .unwrap();
    let mut phi = vec![0.0; m];
    assert!(matches!(
        installed.explain(&vec![1.0; m], &mut phi),
        Err(ExplainError::PathTooComplex { .. })
    ));
}
