#!/usr/bin/env bash
# Regenerates docs/architecture.svg (the README's picture) from docs/architecture.dot.
# Needs Graphviz's `dot`: on Debian, `apt-get update && apt-get install -y graphviz`.
# Usage: scripts/architecture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dot >/dev/null || {
  echo "architecture: no \`dot\`; install Graphviz (Debian: apt-get install -y graphviz)" >&2
  exit 1
}
dot -Tsvg docs/architecture.dot -o docs/architecture.svg.tmp
mv docs/architecture.svg.tmp docs/architecture.svg
echo "architecture: wrote docs/architecture.svg"
