# geofm task runner. Two commands matter:
#   make report   set up .venv (first time) and run the demo pipeline -> reports/index.html
#   make test     the whole test suite: ruff, unit tests, notebooks under nbval, HTML reports
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= demo
EXPERIMENT ?=
CI_RUN := ci-notebooks

.PHONY: report test test-fast study study-seed001 lab data bench clean-work setup

setup: $(STAMP)

# uv when it can (about 4x faster than pip for the same pins), pip otherwise: tools/install_env.py
$(STAMP): requirements.txt pyproject.toml tools/install_env.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "geofm needs Python 3.11, found " + sys.version.split()[0] + "; set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) tools/install_env.py $(VENV)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/geofm report --preset $(PRESET) $(if $(EXPERIMENT),--experiment $(EXPERIMENT))

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/run_all.sh

test-fast: $(STAMP)
	GEOFM_SKIP_DEMO=1 PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/run_all.sh

study: $(STAMP)
	$(BIN)/geofm study --preset $(PRESET)

study-seed001: $(STAMP)
	$(BIN)/geofm study --study seed001 --preset $(PRESET)

data: $(STAMP)
	$(BIN)/geofm data --preset $(PRESET) $(if $(EXPERIMENT),--experiment $(EXPERIMENT))

bench: $(STAMP)
	$(BIN)/geofm bench

# as root (every container user) JupyterLab exits unless told --allow-root
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean-work:
	rm -rf work reports/*/ reports/index.html
