#!/usr/bin/env bash
# Runs the benchmark of BENCHMARKS.md on this machine: installs the Node.js
# baseline's packages (Stripe's `stripe` library and better-sqlite3@12, built
# from source when no prebuilt binary can be fetched), builds salestrack in
# release mode and runs every figure. Arguments go to the harness:
#   bench/run.sh            the full run (about ten minutes; ~4 GB of disk)
#   bench/run.sh --quick    small sizes, a smoke check
#   bench/run.sh --only webhook,redirect --markdown target/bench.md
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  (
    cd bench/node-baseline
    npm ci --no-audit --no-fund >/dev/null 2>&1 || npm install --no-audit --no-fund
  )
else
  echo "node and npm not found: the Node.js baseline will be skipped" >&2
fi

cargo build --release --bin bench
exec target/release/bench "$@"
