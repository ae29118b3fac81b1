#!/usr/bin/env bash
# Formatting and lints, as CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# With the containers feature, so its code (services::containers, the harness's bundled
# containers) is linted too; ci/containers.sh runs it.
cargo clippy --workspace --all-targets --locked --features apex-harness/containers -- -D warnings
