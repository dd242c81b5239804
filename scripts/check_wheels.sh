#!/usr/bin/env bash
# `make test-wheels`: build the sdist and, from it, the wheel of this checkout; then in one
# fresh virtual environment (no system site packages) install the wheel alone (the core
# library: torch and numpy) and run the README's scheduler example, then install it with
# the suite extra and train one epoch on digits with lerac-train (the configs come from
# inside the wheel). PY: the Python that builds (needs setuptools and build: the project's
# venv); BASE_PYTHON: the interpreter of the fresh environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lerac-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SECONDS=0
"$PY" -m build --no-isolation --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
	|| { tail -30 "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/lerac-*.whl)
echo "built $(basename "$WHEEL") in ${SECONDS}s"
"${BASE_PYTHON:-python3}" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q "$WHEEL"
echo "core wheel installed at ${SECONDS}s"
(cd "$WORK" && "$VPY" "$ROOT/scripts/wheel_check.py" core "$ROOT/README.md")
"$VPY" -m pip install -q "$WHEEL[suite]"
echo "suite wheel installed at ${SECONDS}s"
(cd "$WORK" && "$WORK/venv/bin/lerac-train" trainer.device=cpu logger=none trainer.max_epochs=1 \
	regime=conventional model.width=8 trainer.progress=false \
	paths.output_dir="$WORK/out" paths.data_dir="$WORK/data" >"$WORK/train.log" 2>&1) \
	|| { tail -30 "$WORK/train.log"; exit 1; }
(cd "$WORK" && "$VPY" "$ROOT/scripts/wheel_check.py" suite "$WORK/out")
echo "test-wheels passed in ${SECONDS}s"
