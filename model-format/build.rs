//! Tabulates `c(n)` for `n < 512` (`$OUT_DIR/small_c.rs`): leaves mostly hold few samples, and
//! a table computed here rather than at run time spares every fresh process or WebAssembly
//! instance 512 logarithms before its first score.

#[path = "src/average_path.rs"]
#[allow(dead_code)]
mod average_path;

fn main() {
    println!("cargo:rerun-if-changed=src/average_path.rs");
    let mut out = String::from(
        "/// `c(n)` for `n < 512` as f64 bits, from `build.rs`.\nstatic SMALL_C_BITS: [u64; 512] = [\n",
    );
    for n in 0..512 {
        out.push_str(&format!(
            "    {:#018x},\n",
            average_path::c_direct(n).to_bits()
        ));
    }
    out.push_str("];\n");
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&dir).join("small_c.rs"), out).expect("writing small_c.rs");
}
