#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run), with a timing summary at the end:
#   1. ruff over the library, tests and notebooks; import-linter: the library's layers (.importlinter)
#   2. every notebook executed with papermill on the CI preset -> reports/ci-notebooks/ + HTML;
#      the example caption corpus; real BigEarthNet (../shared, when present)
#   3. the training benchmark notebook in its quick form (-> reports/bench-training/)
#   4. the demo pipeline (01-07 on the demo preset, CPU) whose metrics the quality-bar tests
#      check; GEOFM_SKIP_DEMO=1 skips it (`make test-fast`)
#   5. pytest: unit tests; the quality bars and the reports in headless chromium with the
#      network off (marked `reports`: they read what steps 2-4 made); nbval re-executing the
#      executed CI notebooks (cells marked NBVAL_CHECK_OUTPUT must reproduce their output)
# Steps run one after the other: two at once (tried for issue 19) slowed each about as much as
# it overlapped them on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 GEOFM_PROGRESS=text GEOFM_ROOT="$PWD"
declare -a names times
step() { local name=$1; shift; local t0=$SECONDS; echo "== $name"; "$@"; names+=("$name"); times+=($((SECONDS - t0))); }
t_all=$SECONDS

step "ruff" ruff check geofm_lib tests notebooks
step "import layers (import-linter)" lint-imports
step "notebooks (papermill, ci preset) + HTML reports" geofm report --preset ci -p run_name=ci-notebooks
step "image-text corpus: example corpus + notebooks (ci)" bash -c \
  "geofm example-corpus && geofm report --preset ci --experiment captions_example -p samples_per_dataset=64 -p run_name=ci-captions"
SHARED_BEN=../shared/data/bigearthnet-v1-examples
if [ -d "$SHARED_BEN" ]; then  # real BigEarthNet patches beside the project (not in a user's clone)
  step "real BigEarthNet via torchgeo: notebooks 01-02 (ci)" bash -c "
    geofm bigearthnet-root work/data/bigearthnet-s2 --s2 $SHARED_BEN/BigEarthNet-S2 --s1 $SHARED_BEN/BigEarthNet-S1 &&
    geofm bigearthnet-root work/data/bigearthnet-s1 --s2 $SHARED_BEN/BigEarthNet-S2 --s1 $SHARED_BEN/BigEarthNet-S1 --sensor s1 &&
    geofm report --preset ci --experiment bigearthnet_torchgeo --notebooks 01,02 -p run_name=ci-bigearthnet-real"
fi
step "training benchmarks (quick: a smoke test of the notebook, not figures)" \
  geofm bench-train --quick
if [ "${GEOFM_SKIP_DEMO:-0}" != "1" ]; then
  step "demo pipeline 01-07 (quality bars)" geofm report --preset demo
fi
step "pytest: unit tests, quality bars, reports in chromium, nbval" \
  pytest -q tests reports/ci-notebooks/*.ipynb --nbval-lax --nbval-current-env -p no:cacheprovider

echo "== timing summary"
for i in "${!names[@]}"; do printf '  %-62s %5d s\n' "${names[$i]}" "${times[$i]}"; done
printf '  %-62s %5d s\n' "total (this script)" "$((SECONDS - t_all))"
