#!/usr/bin/env bash
# Installs what building and testing need: the wasm32-wasip2 Rust target.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup show active-toolchain >/dev/null   # makes rustup install the toolchain in rust-toolchain.toml
rustup target add wasm32-wasip2
