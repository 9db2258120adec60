#!/usr/bin/env bash
# The GPU path, checked in one short run (under 8 minutes) on a machine with an NVIDIA GPU:
#  1. a venv of its own with the gpu extra (onnxruntime-gpu, never beside onnxruntime) and a
#     CPU torch to build the bundle; onnxruntime must offer the CUDA execution provider;
#  2. the default bundle (`make bundle`'s pipeline) unless $ARTIFACTS holds one already;
#  3. the ranking served with MOERANK_PROVIDER=cuda equals the CPU one
#     (benchmarks/provider_parity.py; both encode queries alike, only the graph moves);
#  4. c=1 P50/P99, c=16 and open-loop throughput through the real service, CPU against
#     CUDA with cross-request batching off and on (benchmarks/serve_latency.py), the text
#     encoder in fp16 on the GPU.
# No GPU exists where moerank is developed and tested; the CPU path is the tested one.
#
#   bash benchmarks/gpu_check.sh          # from the repository root
#   ARTIFACTS=artifacts SECONDS_PER_POINT=5 RATES=200,400 bash benchmarks/gpu_check.sh
#
# Writes results/gpu_parity.json, results/gpu_latency.json and .png.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-/tmp/moerank-gpu-venv}
ARTIFACTS=${ARTIFACTS:-/tmp/moerank-gpu-artifacts}
BUNDLE=$ARTIFACTS/bundles/default
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}  # training runs on the CPU
SECONDS_PER_POINT=${SECONDS_PER_POINT:-8}
RATES=${RATES:-200,400,800}
# Cross-request micro-batching (service/batcher.py, bundles with a batched graph): the wait
# in ms, 0 = off. Unknown settings are ignored: a build without it runs both rows alike.
BATCH_WAIT_VAR=${BATCH_WAIT_VAR:-MOERANK_BATCH_WAIT_MS}
BATCH_WAIT_ON=${BATCH_WAIT_ON:-2}
started=$SECONDS

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "$TORCH_SPEC" --index-url "$TORCH_INDEX"
  "$VENV/bin/pip" install --quiet -e ".[serve,gpu,train,loadtest]"
  # CUDA and cuDNN as wheels (onnxruntime-gpu's extras), for hosts without them installed.
  "$VENV/bin/pip" install --quiet "onnxruntime-gpu[cuda,cudnn]" || true
fi
PY=$VENV/bin/python
# A dependency that pulled the CPU onnxruntime in would shadow the GPU one (same module).
if "$VENV/bin/pip" show --quiet onnxruntime 2>/dev/null; then
  "$VENV/bin/pip" uninstall --quiet -y onnxruntime
  "$VENV/bin/pip" install --quiet --force-reinstall --no-deps onnxruntime-gpu
fi
# The wheels' libraries where the dynamic loader (so every service process) finds them.
nvidia_libs=$("$PY" -c "import nvidia, os; print(':'.join(os.path.join(p, d, 'lib')
  for p in nvidia.__path__ for d in sorted(os.listdir(p))))" 2>/dev/null || true)
export LD_LIBRARY_PATH=${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "[gpu_check] environment ready after $((SECONDS - started)) s"

if [ ! -f "$BUNDLE/manifest.json" ]; then
  "$PY" -m pipelines.default_bundle --artifacts "$ARTIFACTS" --bundle "$BUNDLE"
fi
echo "[gpu_check] bundle ready after $((SECONDS - started)) s"

# onnxruntime falls back to the CPU with only a warning when the CUDA libraries fail to
# load: the graph must really be placed on the GPU.
"$PY" - "$BUNDLE/model.onnx" <<'PYTHON'
import sys

import onnxruntime as ort

print("onnxruntime", ort.__version__, ort.get_available_providers())
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
session = ort.InferenceSession(sys.argv[1], providers=providers)
print("model.onnx runs on", session.get_providers())
assert session.get_providers()[0] == "CUDAExecutionProvider", "the CUDA provider did not load"
PYTHON

"$PY" benchmarks/provider_parity.py --bundle "$BUNDLE" --provider cuda --calls 100 \
  --name gpu_parity
echo "[gpu_check] parity checked after $((SECONDS - started)) s"

# One uvicorn worker each; the model and the encoder (fp16) on the GPU for the cuda rows.
cuda="+MOERANK_PROVIDER=cuda+MOERANK_ENCODER_VARIANT=fp16"
"$PY" benchmarks/serve_latency.py --artifacts "$ARTIFACTS" \
  --model "cpu=$BUNDLE+MOERANK_PROVIDER=cpu+$BATCH_WAIT_VAR=0" \
  --model "cuda=$BUNDLE$cuda+$BATCH_WAIT_VAR=0" \
  --model "cuda_batched=$BUNDLE$cuda+$BATCH_WAIT_VAR=$BATCH_WAIT_ON" \
  --concurrency 1,16 --rates "$RATES" --cold-shares 0 --seconds "$SECONDS_PER_POINT" \
  --name gpu_latency
echo "[gpu_check] done after $((SECONDS - started)) s"
