# Two entry points that work on a fresh machine with only Python 3.11:
#   make repro   set up .venv and run the whole DVC pipeline on the default corpus
#   make test    set up .venv with the test extras and run the tests (the slow tier aside)
#   make test-slow  the slow tier: the study pipeline, reproducibility from scratch, kill/resume, DDP, make lab
#   make study   the opt-in study tier (after make repro)
#   make scale   the opt-in scale axis: the verdict at three generator compute points (scale/dvc.yaml)
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# DVC stages call `python`; this makes it the project's environment
export PATH := $(BIN):$(PATH)

.PHONY: repro study scale test test-slow lab bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-base $(VENV)/.installed-peer

$(VENV)/.installed-peer: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[peer]'
	touch $@ $(VENV)/.installed-base

repro: $(VENV)/.installed-base
	$(BIN)/dvc repro

# the opt-in study tier (study/dvc.yaml): ablation arms, the full frontier and the public peer
# (x-transformers, the `peer` extra), after the quick tier
study: $(VENV)/.installed-peer
	$(BIN)/dvc repro study/dvc.yaml

# the opt-in scale axis (scale/dvc.yaml): the finalist rows at several generator compute points, each
# against its own model's confidence, with its own judge (on the quick tier's prepared data)
scale: $(VENV)/.installed-base
	$(BIN)/dvc repro scale/dvc.yaml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed-test $(VENV)/.installed-lab
	$(BIN)/python -m pytest -q -m slow

$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[lab]'
	touch $@ $(VENV)/.installed-base

# JupyterLab on the executed reports (reports/, written by the notebook stages), as root or as a user, on
# this machine or a remote one: no browser is started, the URL with its token is printed (on a remote
# machine: ssh -L $(LAB_PORT):localhost:$(LAB_PORT) host, then open that URL here)
LAB_PORT ?= 8888
LAB_IP ?= 127.0.0.1
LAB_ROOT ?= $(CURDIR)/reports
LAB_ARGS ?=
lab: $(VENV)/.installed-lab
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/jupyter lab --no-browser --allow-root --ip=$(LAB_IP) --port=$(LAB_PORT) \
		--ServerApp.root_dir=$(LAB_ROOT) $(LAB_ARGS)

bench: $(VENV)/.installed-base
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/sample.py

clean-venv:
	rm -rf $(VENV)
