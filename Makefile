# Everything a newcomer or CI needs: `make demo` and `make test` set up .venv on their own.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test man bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.cpu: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu,dev]'
	touch $@ $(VENV)/.cpu

# The whole pipeline on built-in defaults: no key, no network, no GPU.
demo: $(VENV)/.cpu
	$(BIN)/gpv-chunk examples/posts.jsonl | $(BIN)/python -m gpvtools.table id author tokens text

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

man: $(VENV)/.cpu
	$(BIN)/python -m gpvtools.manpages man

bench: $(VENV)/.cpu
	$(BIN)/python bench/chunk.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
