//! Picks the model file to embed: `$SFE_MODEL_PATH`, else `data/model.sfm` at the workspace root.
//! The file is decoded here too, so a corrupt or wrong-version model fails the build.

use std::path::PathBuf;

fn main() {
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
    if let Err(e) = model_format::Model::from_bytes(&bytes) {
        panic!("the model at {} is not usable: {e}", path.display());
    }
    let path = path.canonicalize().expect("the model path exists");
    println!("cargo:rustc-env=SFE_MODEL_FILE={}", path.display());
}
