#!/usr/bin/env bash
# The README's test command, built with the harness's `containers` feature (and so the
# backend's): ci/containers.sh then runs the service tests and the bundled harness run on
# Postgres and Redis containers from this same build, without compiling anything again. With
# the service URLs set, as .ci/run sets them, the containers code is never reached.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --features apex-harness/containers
