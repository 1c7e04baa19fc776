#!/usr/bin/env bash
# Installs what the demo needs: the toolchain of rust-toolchain.toml, the wasm32-wasip2 target and
# the Spin CLI from ../shared/tools/ in ~/.cache/secureflow-edge/bin/spin (the demo serves with
# `spin up`; so do the tests' second pass). With --tests also what the tests need: PostgreSQL server binaries
# (throwaway clusters in the store, forwarding and trainer tests; Debian package `postgresql`),
# Redis (`redis-server`: the shared key-value store of the multi-edge `spin up` tests),
# Chromium and its WebDriver (`chromium`, `chromium-driver`: the analyst console's browser test),
# a font for the trainer's plots; s3s-fs, the S3-compatible server the object-store tests start;
# and .venv at the repo root with the pinned Python packages of tools/requirements.txt
# (scikit-learn parity test, tools/export_sklearn.py, shap for TreeSHAP parity).
# Usage: scripts/setup.sh [--tests]
set -euo pipefail
cd "$(dirname "$0")/.."
rustup show active-toolchain >/dev/null   # makes rustup install the toolchain in rust-toolchain.toml
rustup target add wasm32-wasip2 2>&1 | grep -v "is up to date" || true
# Spin 4.1 (built from source, ../shared/tools/README.md): decompressed in place, never copied into
# the repository; the checksum guards against a truncated or different binary.
spin_xz=../shared/tools/spin-4.1.0-pre0-x86_64-linux.xz
spin_sha=430db329094e43db9312e96f703879891aa073c4ae3295c56d2e330c74ea3495
spin_bin="$HOME/.cache/secureflow-edge/bin/spin"
if echo "$spin_sha  $spin_bin" | sha256sum -c --status 2>/dev/null; then
  :
elif [[ ! -f $spin_xz ]] && command -v spin >/dev/null; then
  echo "setup: $spin_xz not found; using $(command -v spin) ($(spin --version | cut -d' ' -f1-2); needs >= 4.1)"
else
  [[ -f $spin_xz ]] || { echo "setup: $spin_xz not found, and no spin on PATH (the demo and the spin up tests need Spin >= 4.1)" >&2; exit 1; }
  mkdir -p "$(dirname "$spin_bin")"
  xz -dc "$spin_xz" > "$spin_bin.tmp"
  echo "$spin_sha  $spin_bin.tmp" | sha256sum -c --status || { echo "setup: $spin_xz: checksum mismatch" >&2; exit 1; }
  chmod +x "$spin_bin.tmp" && mv "$spin_bin.tmp" "$spin_bin"
  echo "setup: installed $("$spin_bin" --version | cut -d' ' -f1-2) at $spin_bin"
fi

[[ "${1:-}" == "--tests" ]] || exit 0
rustup component add clippy rustfmt 2>&1 | grep -v "is up to date" || true

# Debian packages: the PostgreSQL server (any version with initdb/pg_ctl) and a font for the
# text in `trainer evaluate`'s plots. Installed only when missing (needs root or sudo).
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing+=(postgresql)
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
# Redis: the key-value store several `spin up` edges share (tests/tests/spin_redis.rs).
command -v redis-server >/dev/null || missing+=(redis-server)
# Chromium driven through chromedriver (WebDriver): tests/tests/console.rs.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "setup: installed ${missing[*]}"
fi

# s3s-fs: a real S3-compatible server for the object-store tests (0.14: builds with our rustc).
if ! command -v s3s-fs >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]]; then
  cargo install s3s-fs --version 0.14.1 --locked --features binary
fi

# Python: skipped when .venv already holds exactly these pins (a copy of the requirements file
# is kept in .venv once the install succeeded).
requirements=tools/requirements.txt
stamp=.venv/.sfe-requirements.txt
if [[ -x .venv/bin/python ]] && cmp -s "$requirements" "$stamp" \
    && .venv/bin/python -c 'import sklearn, numpy, pandas, pyarrow, shap' 2>/dev/null; then
  echo "setup: .venv is up to date"
else
  python=${PYTHON:-python3}
  # The pinned numpy/pandas/scikit-learn need CPython >= 3.11.
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: $python is $("$python" --version 2>&1); need Python >= 3.11 (set PYTHON=...)" >&2
    exit 1
  }
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
  echo "setup: .venv ready ($(.venv/bin/python --version))"
fi
