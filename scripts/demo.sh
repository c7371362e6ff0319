#!/usr/bin/env bash
# Set up a virtual environment and run the main job: `bertkit demo` (pre-train a small BERT on the
# Python documentation shipped with Python itself, a few minutes on a laptop CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e .
.venv/bin/bertkit demo "$@"
