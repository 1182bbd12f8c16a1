#!/usr/bin/env bash
# Proof on a GPU: server-GPU latency tables from PyTorch eager and CUDA-graph replay, fp32 and fp16,
# channels_last (the server-gpu-torch profile), each row with the CUDA allocator's peak and the
# GPU's clocks.
#
#   OUT=/some/dir benchmarks/gpu_proof.sh             # on a CUDA machine, from the repo root; < 8 min on an H200
#   OUT=/some/dir benchmarks/gpu_proof.sh --dry-run   # the same steps on the CPU with tiny settings (CI)
#
# Needs only what the bare GPU image has (python 3.12, torch with CUDA, onnx, onnxruntime, pandas,
# typer, rich, pyyaml, matplotlib): nothing is installed, nothing is downloaded, gsdeploy runs from
# this checkout (PYTHONPATH). Writes under $OUT (default results/gpu_proof):
#   gpu_resnet50.csv/.md   ResNet-50 dense vs 50% and 75% of the inner bottleneck channels pruned
#                          (resnet50_pruned50, resnet50_pruned75), batch 1/64/256
#   gpu_families.csv/.md   Hinge ResNet-56 @50% and the other seed families vs their dense nets, batch 1/128
#   report.md              both merged by `gsdeploy report` (speedup, FLOP speedup, efficiency)
#   env.txt                python, torch, CUDA, GPU and nvidia-smi
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -gt 0 ]; then echo "usage: OUT=DIR $0 [--dry-run]" >&2; exit 2; fi
OUT="${OUT:-results/gpu_proof}"
PY="${PYTHON:-python3}"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
mkdir -p "$OUT"
gs() { "$PY" -m gsdeploy "$@"; }

if [ "$DRY" = 1 ]; then
  # tiny stand-ins with the same shape of run: a pruned and a Hinge CIFAR net on the CPU torch profile
  PROFILE=cpu-torch PRECISIONS="[fp32]"
  BIG_MODELS="[{model: resnet20_pruned50}]" BIG_BATCHES="[1, 2]"
  FAMILIES="[{model: resnet20_hinge50}]" FAMILY_BATCHES="[1, 2]"
  TIMING=(--warmup-s 0.01 --min-iterations 3 --min-duration-s 0.01 --threads 1)
else
  PROFILE=server-gpu-torch PRECISIONS="[fp32, fp16]"
  BIG_MODELS="[{model: resnet50_pruned50}, {model: resnet50_pruned75}]" BIG_BATCHES="[1, 64, 256]"
  FAMILIES="[{model: resnet56_hinge50}, {model: resnet56_pruned50}, {model: resnet56_dwgl}, {model: resnet56_fga}, {model: vgg16_hinge50}]"
  FAMILY_BATCHES="[1, 128]"
  # per model and group: 0.5 s warm-up, then >= 50 runs and >= 1 s (the profile asks 1 s / 100 / 3 s,
  # which would not fit 8 minutes); GPU clocks are read after each group and recorded in the rows
  TIMING=(--warmup-s 0.5 --min-iterations 50 --min-duration-s 1.0)
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "mode: $([ "$DRY" = 1 ] && echo dry-run || echo gpu)"
  "$PY" -c 'import platform, torch; print("python", platform.python_version()); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version()); print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,persistence_mode --format=csv || true
  fi
} > "$OUT/env.txt" 2>&1

cat > "$OUT/gpu_resnet50.yaml" <<EOF
name: gpu_resnet50
models: $BIG_MODELS
profiles: [$PROFILE]
batches: $BIG_BATCHES
precisions: $PRECISIONS
retries: 0
EOF
cat > "$OUT/gpu_families.yaml" <<EOF
name: gpu_families
models: $FAMILIES
profiles: [$PROFILE]
batches: $FAMILY_BATCHES
precisions: $PRECISIONS
retries: 0
EOF

status=0
gs sweep "$OUT/gpu_resnet50.yaml" --output "$OUT" "${TIMING[@]}" || status=$?
gs sweep "$OUT/gpu_families.yaml" --output "$OUT" "${TIMING[@]}" || status=$?
gs report "$OUT" --output "$OUT/report.md" || status=$?
echo "gpu_proof: wrote $(ls "$OUT" | tr '\n' ' ')(exit $status)"
exit $status
