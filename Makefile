# Two commands for a fresh clone:  `make run` (set up + main job)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned: the CPU build lies on disk here; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,multilingual,llamaindex,langchain]'
	$(BIN)/pip check
	@if $(BIN)/pip show optimum >/dev/null 2>&1; then echo "optimum must not be installed"; exit 1; fi
	touch $(STAMP)

setup: $(STAMP)

QUESTION ?= Wie hoch ist die Crimphöhe bei 0,35 mm²?

run: setup
	HF_HUB_OFFLINE=1 $(BIN)/osp -q model export
	HF_HUB_OFFLINE=1 $(BIN)/osp ingest examples/osp-corpus/kern --layer kern
	HF_HUB_OFFLINE=1 $(BIN)/osp ingest examples/osp-corpus/erweitert --layer erweitert
	HF_HUB_OFFLINE=1 $(BIN)/osp query "$(QUESTION)" -n 5

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/query_latency.py

clean:
	rm -rf $(VENV) osp-data
