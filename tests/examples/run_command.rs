//! Runs a `wasm32-wasip2` command component (e.g. model-format's `bench_explain` built for that
//! target) in wasmtime with Cranelift's defaults, the working directory preopened as `.`, so the
//! same benchmark can be timed natively and as WebAssembly side by side.
//!
//! cargo run --release -p harness --example run_command -- COMPONENT [ARGS...]

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .context("usage: run_command COMPONENT [ARGS...]")?;
    // Epoch checks compiled in, as Spin compiles components (see the harness's engine).
    let engine =
        Engine::new(Config::new().epoch_interruption(true)).map_err(anyhow::Error::from)?;
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    let component = Component::from_file(&engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {path}"))?;
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio()
        .args(&args)
        .preopened_dir(".", ".", wasmtime_wasi::FsPerms::ReadOnly)
        .map_err(anyhow::Error::from)
        .context("preopening the working directory")?;
    let mut store = Store::new(
        &engine,
        State {
            ctx: wasi.build(),
            table: ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let command =
        wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, &linker)
            .await
            .map_err(anyhow::Error::from)?;
    let result = command
        .wasi_cli_run()
        .call_run(&mut store)
        .await
        .map_err(anyhow::Error::from)?;
    if result.is_err() {
        std::process::exit(1);
    }
    Ok(())
}
