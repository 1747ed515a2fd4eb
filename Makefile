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

# torch is pinned first: 2.13.0 is the CPU build these machines keep on disk (a bare `torch`
# would fetch a multi-GB CUDA build); override with `make test TORCH=...`.
TORCH ?= torch==2.13.0

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.cpu

# Every stage that exists, on built-in defaults: no key, no network, no GPU. Until gpv-parse lands,
# each chunk's text stands in for its perceptions (--text-field text).
DEMO_COLUMNS := id author Self-Dir=values.Self-Direction.score Stimul=values.Stimulation.score \
	Hedon=values.Hedonism.score Achiev=values.Achievement.score Power=values.Power.score \
	Secur=values.Security.score Conform=values.Conformity.score Trad=values.Tradition.score \
	Benev=values.Benevolence.score Univ=values.Universalism.score

demo: $(VENV)/.cpu
	$(BIN)/gpv-chunk examples/posts.jsonl \
	| $(BIN)/gpv-score --text-field text --values schwartz \
	| $(BIN)/python -m gpvtools.table $(DEMO_COLUMNS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

man: $(VENV)/.cpu
	$(BIN)/python -m gpvtools.manpages man

bench: $(VENV)/.cpu
	$(BIN)/python bench/chunk.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
