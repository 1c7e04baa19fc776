#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh --tests: PostgreSQL, s3s-fs,
# the Python venv for the parity tests), then runs every test of the workspace in release mode.
# Arguments go to `cargo test` (e.g. scripts/test.sh -p store).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
exec cargo test --release "$@"
