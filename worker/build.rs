//! Picks the model file to embed: `$SFE_MODEL_PATH`, else `data/model.sfm` at the workspace root.
//! The file is decoded here too, so a corrupt or wrong-version model fails the build.
//!
//! It also builds the model's TreeSHAP tables (`Model::explanation_tables`) into
//! `$OUT_DIR/explanation.tables`: a fresh instance installs them instead of building them
//! on its first explained request.

use std::path::PathBuf;

fn main() {
    // A 512 KiB shadow stack instead of wasm-ld's 1 MiB (the worker's deepest path, serde_json
    // at its recursion limit, needs a fraction of it). The stack sits below the static data,
    // so the embedded model and tables then lie within the first 2 MiB of linear memory, the
    // part a pooling host (Spin) keeps resident and resets by copying between instances:
    // a fresh instance no longer page-faults them in, which took 60-100 µs off its first
    // request (measured with the harness at --max-reuse 1).
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("wasm32")) {
        println!("cargo:rustc-link-arg=-zstack-size=524288");
    }
    println!("cargo:rerun-if-env-changed=SFE_MODEL_PATH");
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os("SFE_MODEL_PATH") {
        Some(p) => manifest_dir.join(p), // absolute paths replace the base
        None => manifest_dir.join("../data/model.sfm"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the model to embed at {}: {e} (set SFE_MODEL_PATH or run `trainer fit`)",
            path.display()
        )
    });
    let model = model_format::Model::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("the model at {} is not usable: {e}", path.display()));
    let path = path.canonicalize().expect("the model path exists");
    println!("cargo:rustc-env=SFE_MODEL_FILE={}", path.display());
    // Verified by the decode above: an instance compares the stored checksum with this instead
    // of hashing the embedded file again at every start.
    let id = model_format::ModelId::of(&bytes).expect("decoded above");
    println!("cargo:rustc-env=SFE_MODEL_CRC={}", id.checksum);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let tables = out_dir.join("explanation.tables");
    let serialized: &'static [u8] = Vec::leak(model.explanation_tables());
    // The instance installs them without a checksum (see worker's `loaded`): check them here.
    let fresh = model_format::Model::from_bytes(&bytes).expect("decoded above");
    if let Err(e) =
        fresh.install_explanation_tables(serialized, model_format::TablesTrust::Untrusted)
    {
        panic!(
            "the explanation tables built for {} do not install: {e}",
            path.display()
        );
    }
    std::fs::write(&tables, serialized)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", tables.display()));
    println!("cargo:rustc-env=SFE_TABLES_FILE={}", tables.display());
}
