#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run), with a timing summary at the end.
#
# Two lanes run side by side, each pinned to one CPU core (taskset), so that neither slows the
# other by oversubscribing the cores (torch, OpenBLAS and joblib all size themselves to the
# cores a process may use):
#   checks  1. ruff over the library, tests, notebooks and tools; import-linter: the library's
#              layers (.importlinter)
#           2. every notebook executed with papermill on the CI preset -> reports/ci-notebooks/
#              + HTML; the example caption corpus; real BigEarthNet (../shared, when present)
#           3. seed 001's study on the CI preset (-> reports/study-seed001-ci.html); the
#              hyperspectral study (group H: 01, 07 with the spectral stem and seed 001's three
#              protocols -> reports/study-spectral-ci.html); the training benchmark notebook
#              in its quick form (-> reports/bench-training/)
#           4. pytest: the unit tests
#           5. pytest: nbval re-executing the CI notebooks of step 2 (cells marked
#              NBVAL_CHECK_OUTPUT must reproduce their output)
#   demo    6. the demo pipeline (01-08 on the demo preset, CPU) whose metrics the quality-bar
#              tests check; GEOFM_SKIP_DEMO=1 skips it (`make test-fast`). It is the longer
#              lane (measured 2026-12-06: 3,082 s of one core against about 1,950 s of checks),
#              so it may use both cores and runs two notebooks at a time where the graph
#              allows (`--jobs 2`, one thread per kernel, as on one pinned core): 07 -> 08, its
#              longest path, beside 02-06, the second kernel sharing the checks lane's core
# then, on both cores:
#           7. pytest, the tests marked `reports`: the quality bars and the reports in headless
#              chromium with the network off (they read what steps 2-5 made)
# Most of the checks lane is single-threaded (kernels starting, imports, tiny tensors), so the
# two lanes overlap almost fully (measured: 25.4 min one step after another on both cores, 18.4
# with the lanes). Without two cores, or with the demo skipped, the steps run one after the
# other, unpinned, the demo one notebook at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 GEOFM_PROGRESS=text GEOFM_ROOT="$PWD"
LOGS=work/test-logs
TIMES=$LOGS/times.tsv

step() {  # step NAME COMMAND...: run it, append "lane<TAB>name<TAB>seconds" to $TIMES
  local name=$1; shift; local t0=$SECONDS
  echo "== $name"
  "$@"
  printf '%s\t%s\t%s\n' "${LANE:-main}" "$name" "$((SECONDS - t0))" >> "$TIMES"
}

lane_checks() {
  step "ruff" ruff check geofm_lib tests notebooks tools
  step "import layers (import-linter)" lint-imports
  step "notebooks (papermill, ci preset) + HTML reports" geofm report --preset ci -p run_name=ci-notebooks
  touch "$LOGS/ci-notebooks.done"  # nbval (step 5, below) re-executes these
  step "image-text corpus: example corpus + notebooks (ci)" bash -c \
    "geofm example-corpus && geofm report --preset ci --experiment captions_example -p samples_per_dataset=64 -p run_name=ci-captions"
  local ben=../shared/data/bigearthnet-v1-examples
  if [ -d "$ben" ]; then  # real BigEarthNet patches beside the project (not in a user's clone)
    step "real BigEarthNet via torchgeo: notebooks 01-02 (ci)" bash -c "
      geofm bigearthnet-root work/data/bigearthnet-s2 --s2 $ben/BigEarthNet-S2 --s1 $ben/BigEarthNet-S1 &&
      geofm bigearthnet-root work/data/bigearthnet-s1 --s2 $ben/BigEarthNet-S2 --s1 $ben/BigEarthNet-S1 --sensor s1 &&
      geofm report --preset ci --experiment bigearthnet_torchgeo --notebooks 01,02 -p run_name=ci-bigearthnet-real"
  fi
  step "seed 001 study (ci preset: 01, 07 with every method, 08's whole grid)" \
    geofm study --study seed001 --preset ci
  step "seed 001's hyperspectral study (group H, ci: 01, 07 with the spectral stem, 3 protocols)" \
    geofm study --study spectral --preset ci -p samples_per_dataset=48
  step "training benchmarks (quick: a smoke test of the notebook, not figures)" \
    geofm bench-train --quick
  step "pytest: unit tests" pytest -q tests -m "not reports" -p no:cacheprovider
  nbval
}

nbval() {
  until [ -f "$LOGS/ci-notebooks.done" ]; do sleep 2; done  # the checks lane makes them first
  step "pytest: nbval re-executes the CI notebooks" \
    pytest -q reports/ci-notebooks/*.ipynb --nbval-lax --nbval-current-env -p no:cacheprovider
}

lane_demo() {
  # two notebooks at a time where the graph allows (07 -> 08 beside 02-06), one thread each:
  # the lane may use both cores, so its second kernel shares the checks lane's core
  step "demo pipeline 01-08 (quality bars)" geofm report --preset demo --jobs "${DEMO_JOBS:-1}"
}

if [ "${1:-}" = "--lane" ]; then  # one lane, started by the main script below
  LANE=$2
  "lane_$2"
  exit 0
fi

mkdir -p "$LOGS"
: > "$TIMES"
rm -f "$LOGS/ci-notebooks.done"
t_all=$SECONDS
mapfile -t cores < <(python -c 'import os; print(*sorted(os.sched_getaffinity(0))[:2], sep="\n")')
skip_demo=${GEOFM_SKIP_DEMO:-0}
if [ "$skip_demo" != "1" ] && [ "${#cores[@]}" -ge 2 ] && command -v taskset >/dev/null \
    && command -v setsid >/dev/null; then
  echo "== two lanes: checks on CPU ${cores[0]}, demo on CPUs ${cores[0]},${cores[1]} with two notebooks at a time (logs in $LOGS/)"
  declare -A pid
  setsid taskset -c "${cores[0]}" bash "$0" --lane checks > "$LOGS/checks.log" 2>&1 & pid[checks]=$!
  DEMO_JOBS=2 setsid taskset -c "${cores[0]},${cores[1]}" bash "$0" --lane demo > "$LOGS/demo.log" 2>&1 & pid[demo]=$!
  failed=
  for _ in 1 2; do  # print each lane's log as it ends; a failed lane stops the other one
    set +e; wait -n -p done_pid "${pid[@]}"; rc=$?; set -e
    for lane in "${!pid[@]}"; do
      if [ "${pid[$lane]}" = "$done_pid" ]; then
        echo "== lane $lane ended (exit $rc) after $((SECONDS - t_all)) s:"
        cat "$LOGS/$lane.log"
        unset "pid[$lane]"
        if [ "$rc" != 0 ]; then failed=$lane; fi
      fi
    done
    if [ -n "$failed" ]; then
      for other in "${!pid[@]}"; do
        echo "== stopping lane $other: lane $failed failed"
        kill -TERM -- "-${pid[$other]}" 2>/dev/null || true
        wait "${pid[$other]}" 2>/dev/null || true
        echo "== what lane $other printed before it was stopped:"
        cat "$LOGS/$other.log"
      done
      exit 1
    fi
  done
else
  LANE=checks lane_checks
  if [ "$skip_demo" != "1" ]; then LANE=demo lane_demo; fi
fi
step "pytest: quality bars, reports in chromium (read what the lanes made)" \
  pytest -q tests -m reports -p no:cacheprovider -rxX

echo "== timing summary (steps of one lane run one after the other; the lanes side by side)"
while IFS=$'\t' read -r lane name secs; do
  printf '  %-7s %-66s %5d s\n' "$lane" "$name" "$secs"
done < "$TIMES"
printf '  %-74s %5d s\n' "total (this script, wall)" "$((SECONDS - t_all))"
# each chain's notebooks with their times and the critical path of the graph (also written to
# work/bench/chain-<run>.json)
echo "== the chains as graphs (geofm graph)"
geofm graph --preset ci -p run_name=ci-notebooks
if [ "$skip_demo" != "1" ]; then geofm graph --preset demo; fi
