# Triton Serving Lab: `make run` executes the whole course, `make test` runs every test.
# Both create .venv on first use (and refresh it when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lab lint strip export screenshots clean

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (first run: several minutes; torch is large)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[dev,k8s]'
	@touch $(STAMP)

## run: execute every notebook in order against the embedded server; copies in build/
##   make run NOTEBOOKS="03 07"   only those notebooks (name prefixes)
##   make run MEASURE_SECONDS=2   any UPPER_CASE notebook parameter (a Python literal, else a string)
# The names of the variables given on make's command line, less the Makefile's own settings;
# make exports their values to the recipe's environment exactly as typed.
RUN_VARIABLES = $(filter-out PYTHON LAB_PORT LAB_ARGS,$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
run: $(STAMP)
	$(BIN)/python -m tools.run_course --from-make '$(RUN_VARIABLES)'

## test: helpers and server tests, then every notebook through nbmake
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/
	cd notebooks && ../$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 -p no:cacheprovider .

## test-busy: pytest tests/ while busy loops keep every core busy (tools/busy.py), as on a loaded laptop or CI runner
.PHONY: test-busy
test-busy: $(STAMP)
	$(BIN)/python -m tools.busy -- $(BIN)/python -m pytest tests/

## lab: JupyterLab on loopback only (LAB_PORT=8888, LAB_ARGS=--no-browser to pass more flags)
LAB_PORT ?= 8888
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	@if [ -n "$(ROOT_FLAG)" ]; then echo "==> running as root (a container, a cloud GPU machine): JupyterLab refuses root unless told, so --allow-root is passed; it still listens on 127.0.0.1 only"; fi
	@echo "==> open the http://127.0.0.1:$(LAB_PORT)/lab?token=... URL that JupyterLab prints below (Ctrl+C twice to stop)"
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

## screenshots: README pictures (JupyterLab, Netron, a measured latency-throughput plot) into docs/screenshots/
screenshots: $(STAMP)
	$(BIN)/python -m tools.screenshots

## lint: ruff on everything
lint: $(STAMP)
	$(BIN)/ruff check .

## export: write helpers/lessons/*.py from the notebook cells marked `#| export NAME`
export: $(STAMP)
	$(BIN)/python -m tools.export_cells

## strip: remove outputs from the committed notebooks (cell ids kept: tests and links use them)
strip: $(STAMP)
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf build
