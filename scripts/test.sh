#!/usr/bin/env bash
# The project's test command: what the README says to run and what CI (.ci/run) runs, after fmt
# and clippy. Installs what the tests need itself, since CI starts from a clean checkout:
#   1. the independent Python IPLD implementation the interop test checks our blocks against;
#   2. the workspace's tests (unit, property, interop, real-process);
#   3. the Python binding, built from this checkout, with its pytest suite and the examples' tests;
#   4. the fuzz smoke: every fuzz target for 25 s from its seeds (installs cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

pip install -r ipld-schema/tests/interop/requirements.txt
cargo test --workspace
# maturin builds into the workspace's target/ with the test build's profile (dev: dependencies
# at opt-level 2, as the tests above run them) instead of release: the same code, a few minutes
# less to build (figures in bindings/python/README.md). The suite runs against an embedded node
# and the target/debug/tidings that cargo test built.
pip install -r bindings/python/tests/requirements.txt
MATURIN_PEP517_ARGS="--profile dev" pip install --force-reinstall --no-deps ./bindings/python
python3 -m pytest -q bindings/python/tests examples/tests
scripts/fuzz-smoke.sh
