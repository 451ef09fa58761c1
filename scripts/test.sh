#!/usr/bin/env bash
# Runs the whole test suite: unit, property and storage-suite tests, in-process broker tests, and the
# multi-process cluster tests (which spawn real runnel-broker binaries built here).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace
