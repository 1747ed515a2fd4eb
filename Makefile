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

# Every stage, on built-in defaults: no key, no network, no GPU. gpv-parse runs the packaged SmolLM2
# GGUF (its replies are cached, so a second run skips it); one row per author.
DEMO_COLUMNS := author perceptions=n_perceptions Self-Dir=values.Self-Direction.score Stimul=values.Stimulation.score \
	Hedon=values.Hedonism.score Achiev=values.Achievement.score Power=values.Power.score \
	Secur=values.Security.score Conform=values.Conformity.score Trad=values.Tradition.score \
	Benev=values.Benevolence.score Univ=values.Universalism.score

demo: $(VENV)/.cpu
	$(BIN)/gpv-chunk examples/posts.jsonl \
	| $(BIN)/gpv-parse \
	| $(BIN)/gpv-score --values schwartz \
	| $(BIN)/gpv-aggregate --by author \
	| $(BIN)/python -m gpvtools.table $(DEMO_COLUMNS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

man: $(VENV)/.cpu
	$(BIN)/python -m gpvtools.manpages man

bench: $(VENV)/.dev
	$(BIN)/python bench/chunk.py
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/aggregate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
