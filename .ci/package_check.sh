#!/usr/bin/env bash
# Packaging check: build a wheel, install it (not editable) into a fresh virtual environment,
# and from an empty folder run a dry run of a copied job file and a tiny job to the end on the
# default local cluster. Catches package data (sites, defaults, processes) missing from the wheel.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel -q --no-deps -w "$work/dist" "$repo"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$work"/dist/hpcmix-*.whl
mkdir "$work/empty"
cd "$work/empty"
cp "$repo/jobs/quickstart.yaml" .
"$work/venv/bin/hpcmix" run quickstart.yaml --dry-run
cat > tiny.yaml <<'JOB'
name: tiny
seed: 7
generate: {profile: fast, chunk_size: 200, events: {train: 400, template: 200, test: 200}}
smearing: [none]
classifier: {hidden_layers: [8], max_epochs: 1, batch_size: 128}
toys: {estimators: [phi_star, nn], alpha: [0.5], n_events: [20], n_toys: 20, batch_size: 10}
JOB
"$work/venv/bin/hpcmix" run tiny.yaml --no-progress
test -e hpcmix-output/tiny/results.zarr
grep -q '<img src="data:image/png;base64,' hpcmix-output/tiny/report/index.html
"$work/venv/bin/python" - <<'PY'
import xarray as xr
import hpcmix  # registers .mixture
ds = xr.open_zarr("hpcmix-output/tiny/results.zarr", consolidated=False)
assert ds.alpha_hat.sel(estimator="nn", smearing="none").shape == (1, 1, 20), ds.alpha_hat.shape
print(ds.mixture.table())
print("package check: wheel install ran the tiny job to the end")
PY
