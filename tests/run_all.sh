#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run), with a timing summary at the end:
#   1. ruff over the library, tests and notebooks; import-linter: the library's layers (.importlinter)
#   2. two lanes at once, each with half the cores (OMP_NUM_THREADS), so that the single-threaded
#      parts of one (kernels starting, papermill, nbconvert, scikit-learn fits) overlap the other:
#      a. the demo pipeline (01-07 on the demo preset, CPU) whose metrics the quality-bar tests
#         check; GEOFM_SKIP_DEMO=1 skips it (`make test-fast`); its log: work/ci-demo.log
#      b. every notebook on the CI preset -> reports/ci-notebooks/ + HTML; the example caption
#         corpus; real BigEarthNet (../shared, when present); the training benchmark notebook in
#         its quick form (-> reports/bench-training/); pytest's unit tests (not marked `reports`)
#   3. pytest on what the lanes made: the quality bars, the reports in headless chromium with
#      the network off, and nbval re-executing the executed CI notebooks (cells marked
#      NBVAL_CHECK_OUTPUT must reproduce the first execution's output exactly)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 GEOFM_PROGRESS=text GEOFM_ROOT="$PWD"
mkdir -p work
TIMES=$(mktemp)
trap 'rm -f "$TIMES"' EXIT
# step NAME CMD...: run and time one step (lines "seconds<TAB>name" in $TIMES)
step() {
  local name=$1; shift; local t0=$SECONDS
  echo "== $name"
  "$@"
  printf '%s\t%s\n' "$((SECONDS - t0))" "$name" >> "$TIMES"
}
CORES=$(nproc)
HALF=$(( CORES > 1 ? CORES / 2 : 1 ))
t_all=$SECONDS

step "ruff" ruff check geofm_lib tests notebooks
step "import layers (import-linter)" lint-imports

lane_demo() {
  if [ "${GEOFM_SKIP_DEMO:-0}" != "1" ]; then
    step "lane a: demo pipeline 01-07 (quality bars)" geofm report --preset demo
  fi
}

lane_rest() {
  step "lane b: notebooks (papermill, ci preset) + HTML reports" \
    geofm report --preset ci -p run_name=ci-notebooks
  step "lane b: image-text corpus: example corpus + notebooks (ci)" bash -c \
    "geofm example-corpus && geofm report --preset ci --experiment captions_example -p samples_per_dataset=64 -p run_name=ci-captions"
  local ben=../shared/data/bigearthnet-v1-examples
  if [ -d "$ben" ]; then  # real BigEarthNet patches beside the project (not in a user's clone)
    step "lane b: real BigEarthNet via torchgeo: notebooks 01-02 (ci)" bash -c "
      geofm bigearthnet-root work/data/bigearthnet-s2 --s2 $ben/BigEarthNet-S2 --s1 $ben/BigEarthNet-S1 &&
      geofm bigearthnet-root work/data/bigearthnet-s1 --s2 $ben/BigEarthNet-S2 --s1 $ben/BigEarthNet-S1 --sensor s1 &&
      geofm report --preset ci --experiment bigearthnet_torchgeo --notebooks 01,02 -p run_name=ci-bigearthnet-real"
  fi
  step "lane b: training benchmarks (quick: a smoke test of the notebook, not figures)" \
    geofm bench-train --quick
  step "lane b: pytest: unit tests" pytest -q tests -m "not reports" -p no:cacheprovider
}

t_lanes=$SECONDS
( export OMP_NUM_THREADS=$HALF; lane_demo ) > work/ci-demo.log 2>&1 &
demo_pid=$!
( export OMP_NUM_THREADS=$HALF; lane_rest ) &  # its output here, as it runs
rest_pid=$!
lane_b=0
wait "$rest_pid" || lane_b=$?
lane_a=0
wait "$demo_pid" || lane_a=$?
echo "== lane a (demo) log: work/ci-demo.log"
if [ "$lane_a" != 0 ]; then
  tail -n 80 work/ci-demo.log
  echo "the demo lane failed (exit $lane_a)"; exit "$lane_a"
fi
grep -E "geofm: |^== " work/ci-demo.log || true
[ "$lane_b" = 0 ] || { echo "lane b failed (exit $lane_b)"; exit "$lane_b"; }
printf '%s\t%s\n' "$((SECONDS - t_lanes))" "both lanes, wall" >> "$TIMES"

step "pytest: quality bars, reports in chromium, nbval" \
  pytest -q tests -m reports reports/ci-notebooks/*.ipynb --nbval-lax --nbval-current-env \
  -p no:cacheprovider

echo "== timing summary (lanes a and b ran at the same time; $CORES cores, $HALF thread(s) each)"
while IFS=$'\t' read -r secs name; do printf '  %-66s %5d s\n' "$name" "$secs"; done < "$TIMES"
printf '  %-66s %5d s\n' "total (this script)" "$((SECONDS - t_all))"
