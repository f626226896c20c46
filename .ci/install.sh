#!/usr/bin/env bash
# Creates the venv and installs labeler with its test extras. torch comes first and sam2 is built
# without build isolation: otherwise pip pulls a second torch (2.6 GB) into sam2's build env.
set -euo pipefail
PY=${1:-python3.11}
VENV=${2:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q torch==2.14.1 torchvision==0.29.1
SAM2_BUILD_CUDA=0 $PIP install -q --no-build-isolation sam2==1.1.0
$PIP install -q -e ".[test]"
