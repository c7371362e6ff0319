#!/usr/bin/env bash
# Set up a virtual environment with the test extras (pinned by .ci/constraints.txt) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e '.[test]'
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q "$@"
