#!/usr/bin/env bash
# Builds and tests the `containers` feature (testcontainers). Not part of .ci/run: it adds
# about two minutes of build. Without a Docker daemon the selection must fall through cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p apex-backend --features containers --lib services
