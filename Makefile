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

# Every stage, on built-in defaults: no key, no network, no GPU. gpv-parse and gpv-elicit run the packaged
# SmolLM2 GGUF (their replies are cached, so a second run skips them); gpv-score the built-in scorer.
# 1) blog posts -> one row per author, and the stability of its perception scores (gpv-validate);
# 2) gpv-elicit: questions for three values, the built-in model's answers, one row per model.
DEMO := build/demo
DEMO_COLUMNS := author perceptions=n_perceptions Self-Dir=values.Self-Direction.score Stimul=values.Stimulation.score \
	Hedon=values.Hedonism.score Achiev=values.Achievement.score Power=values.Power.score \
	Secur=values.Security.score Conform=values.Conformity.score Trad=values.Tradition.score \
	Benev=values.Benevolence.score Univ=values.Universalism.score
ELICIT_VALUES := Power,Benevolence,Hedonism

demo: $(VENV)/.cpu
	mkdir -p $(DEMO)
	$(BIN)/gpv-chunk examples/posts.jsonl \
	| $(BIN)/gpv-parse \
	| $(BIN)/gpv-score --values schwartz \
	| tee $(DEMO)/scored.jsonl \
	| $(BIN)/gpv-aggregate --by author \
	| $(BIN)/python -m gpvtools.table $(DEMO_COLUMNS)
	$(BIN)/gpv-validate stability --by author --table -o $(DEMO)/stability.json $(DEMO)/scored.jsonl
	$(BIN)/gpv-elicit questions --values $(ELICIT_VALUES) -n 2 --max-tokens 200 \
	| $(BIN)/gpv-elicit ask --subject smollm2=builtin --max-tokens 128 \
	| $(BIN)/gpv-parse --prompt ai \
	| $(BIN)/gpv-score --values $(ELICIT_VALUES) \
	| $(BIN)/gpv-aggregate --by subject \
	| $(BIN)/python -m gpvtools.table subject perceptions=n_perceptions Power=values.Power.score \
		Benev=values.Benevolence.score Hedon=values.Hedonism.score

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
