# imagery_watch: the two commands of the README set everything up on a fresh machine.
#   make demo   create .venv, install, run the detection job on sample_tiles/
#   make test   create .venv, install with test extras, run the whole test suite

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip
OUT    ?= out/sample

.PHONY: demo test install install-test bench clean help sample-tiles browser

help:
	@echo "make demo   - set up .venv and run the sample job (outputs in $(OUT))"
	@echo "make test   - set up .venv with test extras and run the test suite"
	@echo "make bench  - run the benchmarks (appends to benchmarks/RESULTS.md)"
	@echo "make clean  - remove .venv and out/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(PIP) install --quiet -e '.[test,bench]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/imagery-watch detect configs/sample.toml --out $(OUT)
	@echo ""
	@echo "Outputs in $(OUT)/:"
	@echo "  patches.gpkg   change patches (layer 'patches'; open in QGIS, styled by rule)"
	@echo "  summary.json   figures of this run (patches and areas per rule, timings)"
	@echo "  job.json       job state: inputs, grid, fitted parameters (lets a killed job resume)"
	@echo "  report.html    indicators against the plan's targets (one self-contained page)"
	@echo "  evaluation.json accuracy against the sample's true changes"
	$(BIN)/imagery-watch indicators $(OUT)
	$(BIN)/imagery-watch evaluate $(OUT)/patches.gpkg sample_tiles/layers.gpkg --json $(OUT)/evaluation.json

# Browser tests drive Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: install-test browser
	$(BIN)/python -m pytest -n 2 -q

bench: install-test
	$(BIN)/python benchmarks/bench_memory.py

sample-tiles: install
	$(BIN)/imagery-watch synthetic generate sample_tiles --seed 2024 --width 6144 --height 6144 --sheet-px 2048 --changes-per-km2 24

clean:
	rm -rf $(VENV) out
