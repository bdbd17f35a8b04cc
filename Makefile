# Two commands: `make run` (set up, make demo data, start the app) and `make test` (set up, lint, test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ADDRESS ?= 127.0.0.1
PORT ?= 8501
DEMO := data/demo

.PHONY: run test setup demo lint bench clean-cache

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

$(DEMO)/train/train.csv: | $(VENV)/.installed
	$(PY) -m core demo-data $(DEMO)

demo: $(DEMO)/train/train.csv

run: setup demo
	$(VENV)/bin/streamlit run app/main.py --server.address $(ADDRESS) --server.port $(PORT)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean-cache:
	rm -rf .cache
