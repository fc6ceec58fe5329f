#!/usr/bin/env bash
# The serving benchmark on one GPU: a Phi-3-mini-sized random model (hidden 3072, 32 layers,
# 32 heads, intermediate 8192, bfloat16), this server (--device cuda: bf16, torch's SDPA) vs
# `transformers serve --continuous-batching` on the same GPU, alternating rounds. Prints
# tokens/s, their ratio, TTFT p99 and decode FLOP/s as a fraction of a bf16 matmul peak.
#
#   bench/serve_gpu.sh [PYTHON]      # PYTHON: an interpreter with CUDA torch (default python3)
#
# The GPU machine reaches no registry: PYTHON must already have torch with CUDA and the server's
# packages (serving_image/requirements.txt; `transformers serve` needs fastapi, uvicorn, pydantic
# and openai as well). Results go to stdout and to $OUT/serve_gpu.json when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
# The repository's packages are not installed there: the server and the bench's helpers
# (phi3_rehearsal.ports, phi3_rehearsal.tiny_phi3) run from the checkout.
export PYTHONPATH=serving_image:rehearsal${PYTHONPATH:+:$PYTHONPATH}

"$PYTHON" - <<'CHECK'
import importlib, sys
missing = [m for m in ("torch", "transformers", "fastapi", "uvicorn", "pydantic_settings",
                       "prometheus_client", "openai", "httpx", "tokenizers", "peft", "jinja2",
                       "phi3_server", "phi3_rehearsal.tiny_phi3")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing modules: {', '.join(missing)} (install serving_image/requirements.txt)")
import torch, transformers
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name(0)}", file=sys.stderr)
if transformers.__version__ != "5.23.0":
    print("warning: the server image pins transformers 5.23.0", file=sys.stderr)
CHECK

nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
"$PYTHON" bench/serve_throughput.py --device cuda --peer-python "$PYTHON" \
    --hidden-size 3072 --layers 32 --heads 32 --intermediate-size 8192 \
    --clients 1,16,64 --long-tokens 512 --rounds 2 "${@:2}" | tee "${OUT:-/tmp}/serve_gpu.json"
