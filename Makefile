# Everything a newcomer or CI needs: `make demo` and `make test` set up .venv on their own.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo demo-posts demo-elicit test test-fast lint man bench clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# llama-cpp-python compiles llama.cpp. By default it compiles for the building CPU's every
# instruction (AVX-512 here), and pip caches that wheel and hands it to any later install: on a
# CPU without those instructions (another CI host, an HPC compute node) the first model call dies
# with "Illegal instruction". So it is built, never from or into pip's cache, for the instruction
# set LLAMA_CPU names:
#   avx2    (default) x86-64 with AVX2/FMA/F16C, which every x86 server of the last decade has
#   avx512  avx2 plus AVX-512 (F/CD/VL/DQ/BW, VBMI, VNNI, BF16) and AVX-VNNI: Intel Sapphire Rapids
#           and later, AMD Zen 4 and later; float32 prompts about 1.4x faster (bench/RESULTS.md)
#   native  all the building CPU has (GGML_NATIVE). On a CPU with AMX that includes llama.cpp's
#           AMX kernels, and llama-cpp-python 0.3.36 built so segfaults in the built-in model's first
#           decode (measured 2026-12-07, bench/RESULTS.md): use avx512 there.
# `make test LLAMA_CPU=avx512` rebuilds llama-cpp-python when the choice (or LLAMA_CMAKE_ARGS) changed.
LLAMA_CPP ?= llama-cpp-python==0.3.36
LLAMA_CPU ?= avx2
LLAMA_ARGS_x86 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_ARGS_avx2 := $(LLAMA_ARGS_x86) -DGGML_AVX512=OFF
LLAMA_ARGS_avx512 := $(LLAMA_ARGS_x86) -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON \
	-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
LLAMA_ARGS_native := -DGGML_NATIVE=ON
LLAMA_CMAKE_ARGS ?= $(LLAMA_ARGS_$(LLAMA_CPU))
ifeq ($(strip $(LLAMA_CMAKE_ARGS)),)
$(error LLAMA_CPU=$(LLAMA_CPU): choose avx2, avx512 or native)
endif
LLAMA_BUILD := $(LLAMA_CPP) $(LLAMA_CMAKE_ARGS)

# What .llama was built with; rewritten only when that changes, so that a change rebuilds it.
$(VENV)/.llama-build: FORCE | $(BIN)/python
	@if [ "$$(cat $@ 2>/dev/null)" != '$(LLAMA_BUILD)' ]; then echo '$(LLAMA_BUILD)' > $@; fi

$(VENV)/.llama: $(VENV)/.llama-build | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir --force-reinstall --no-deps '$(LLAMA_CPP)'
	touch $@

$(VENV)/.cpu: pyproject.toml $(VENV)/.llama | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

# torch is pinned first: 2.13.0 is the CPU build these machines keep on disk (a bare `torch`
# would fetch a multi-GB CUDA build); override with `make test TORCH=...`.
TORCH ?= torch==2.13.0

$(VENV)/.dev: pyproject.toml $(VENV)/.llama | $(BIN)/python
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.cpu

# Every stage, on built-in defaults: no key, no network, no GPU. gpv-parse takes each sentence of the posts as
# a perception, as it stands (its offline default, bench/e2e.py); gpv-elicit and gpv-parse --prompt ai run the
# packaged SmolLM2 GGUF (their replies are cached, so a second run skips them); gpv-score the built-in scorer.
# 1) blog posts -> one row per author, a report with the evidence behind each score (gpv-report, HTML),
#    and the stability of its perception scores (gpv-validate);
# 2) gpv-elicit: questions for three values, the built-in model's answers, one row per model.
DEMO := build/demo
DEMO_COLUMNS := author perceptions=n_perceptions Self-Dir=values.Self-Direction.score Stimul=values.Stimulation.score \
	Hedon=values.Hedonism.score Achiev=values.Achievement.score Power=values.Power.score \
	Secur=values.Security.score Conform=values.Conformity.score Trad=values.Tradition.score \
	Benev=values.Benevolence.score Univ=values.Universalism.score
ELICIT_VALUES := Power,Benevolence,Hedonism

demo: $(VENV)/.cpu
	@$(MAKE) --no-print-directory demo-posts demo-elicit
	@echo "the report, with the evidence behind each author's scores: $(DEMO)/report.html (open it in a browser)"

# The demo's two parts, without the setup (tests/test_report_browser.py runs demo-posts with BIN= its own).
demo-posts:
	mkdir -p $(DEMO)
	$(BIN)/gpv-chunk examples/posts.jsonl \
	| $(BIN)/gpv-parse \
	| $(BIN)/gpv-score --values schwartz \
	| tee $(DEMO)/scored.jsonl \
	| $(BIN)/gpv-aggregate --by author \
	| tee $(DEMO)/authors.jsonl \
	| $(BIN)/python -m gpvtools.commands.table $(DEMO_COLUMNS)
	$(BIN)/gpv-report $(DEMO)/authors.jsonl --evidence $(DEMO)/scored.jsonl --title "gpvtools demo" \
		-o $(DEMO)/report.html
	$(BIN)/gpv-validate stability --by author --table -o $(DEMO)/stability.json $(DEMO)/scored.jsonl

demo-elicit:
	$(BIN)/gpv-elicit questions --values $(ELICIT_VALUES) -n 2 --max-tokens 200 \
	| $(BIN)/gpv-elicit ask --subject smollm2=builtin --max-tokens 128 \
	| $(BIN)/gpv-parse --prompt ai \
	| $(BIN)/gpv-score --values $(ELICIT_VALUES) \
	| $(BIN)/gpv-aggregate --by subject \
	| $(BIN)/python -m gpvtools.commands.table subject perceptions=n_perceptions Power=values.Power.score \
		Benev=values.Benevolence.score Hedon=values.Hedonism.score

# The whole suite, lint first: what CI runs (.ci/run) and what the README gives.
# -rs: each skip's reason (under GPV_REQUIRE, as .ci/run sets it, a skip for a missing part fails instead).
test: $(VENV)/.dev lint
	$(BIN)/python -m pytest -q -rs

# A quick loop while working: everything but the tests marked slow (real models, long pipelines).
test-fast: $(VENV)/.dev lint
	$(BIN)/python -m pytest -q -rs -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check gpvtools tests bench

man: $(VENV)/.cpu
	$(BIN)/python -m gpvtools.commands.manpages man

bench: $(VENV)/.dev
	$(BIN)/python bench/chunk.py
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/aggregate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
