#!/usr/bin/env bash
# One prepared GPU check of code/train.py (about 5-6 minutes on one H100, warm-up and compilation included).
#
#   benchmarks/gpu_check.sh              # on a machine with an NVIDIA GPU
#   benchmarks/gpu_check.sh --dry-run    # print what it would run; needs no GPU
#   benchmarks/gpu_check.sh --cpu-smoke  # the same pipeline on the CPU with tiny settings (checks the script)
#
# Runs train.py (through benchmarks/probe.py, which only wraps timers around its functions) for a fixed number
# of steps per epoch, 3 epochs (1: warm-up and compilation, 2: timed, 3: profiled), on
#   smallcnn at 28 px (1 channel)   and   resnet50 at 224 px (3 channels; also from shards at 224 px),
# each with amp on/off and compile off/on, on synthetic PNG class folders the script writes first. Prints
# images/s, GPU busy (union of CUDA kernel time / wall time, torch.profiler), nvidia-smi utilization sampled in
# the background, and peak GPU memory (torch.cuda.max_memory_allocated / reserved).
# Needs only the repository and its Python environment (PY, default .venv/bin/python). Results: OUT
# (default build/gpu-check): runs/*.log, nvidia-smi.csv, summary.json. Runs that would overrun BUDGET_S seconds
# (default 330) are skipped and listed, so the whole check stays within about 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/code${PYTHONPATH:+:$PYTHONPATH}"  # probe.py imports train.py's modules, as the container does

MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --cpu-smoke) MODE=cpu ;;
  "") ;;
  *) echo "usage: $0 [--dry-run | --cpu-smoke]"; exit 2 ;;
esac

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-build/gpu-check}
BUDGET_S=${BUDGET_S:-330}
STEPS_SMALL=${STEPS_SMALL:-100}
STEPS_R50=${STEPS_R50:-30}
BS_SMALL=${BS_SMALL:-128}
BS_R50=${BS_R50:-128}
SIZE_R50=224
DEVICE=cuda
if [ "$MODE" = cpu ]; then  # tiny: checks the pipeline, not the speed
  STEPS_SMALL=2; STEPS_R50=2; BS_SMALL=8; BS_R50=4; SIZE_R50=32; DEVICE=cpu; BUDGET_S=${CPU_SMOKE_BUDGET_S:-600}
  OUT=${OUT%/}-cpu-smoke
fi
N_SMALL=$((STEPS_SMALL * BS_SMALL))
N_R50=$((STEPS_R50 * BS_R50))

# name model size channels batch steps amp compile estimated-seconds [data folder, default data<size>]; most
# informative first. The -shards run reads the same 224 px images as shards (prepare_data --shards, written once).
CONFIGS=(
  "resnet50-${SIZE_R50}-amp resnet50 $SIZE_R50 3 $BS_R50 $STEPS_R50 true false 30"
  "resnet50-${SIZE_R50}-amp-shards resnet50 $SIZE_R50 3 $BS_R50 $STEPS_R50 true false 30 shards$SIZE_R50"
  "resnet50-${SIZE_R50}-fp32 resnet50 $SIZE_R50 3 $BS_R50 $STEPS_R50 false false 30"
  "smallcnn-28-amp smallcnn 28 1 $BS_SMALL $STEPS_SMALL true false 20"
  "smallcnn-28-fp32 smallcnn 28 1 $BS_SMALL $STEPS_SMALL false false 20"
  "resnet50-${SIZE_R50}-amp-compile resnet50 $SIZE_R50 3 $BS_R50 $STEPS_R50 true true 110"
  "smallcnn-28-amp-compile smallcnn 28 1 $BS_SMALL $STEPS_SMALL true true 50"
  "resnet50-${SIZE_R50}-fp32-compile resnet50 $SIZE_R50 3 $BS_R50 $STEPS_R50 false true 110"
  "smallcnn-28-fp32-compile smallcnn 28 1 $BS_SMALL $STEPS_SMALL false true 50"
)
if [ "$MODE" = cpu ] && [ "${CPU_SMOKE_COMPILE:-0}" != 1 ]; then
  CONFIGS=("${CONFIGS[@]:0:4}")  # compiling on a CPU takes minutes: opt in with CPU_SMOKE_COMPILE=1
fi

run() {  # print, then run unless dry
  echo "+ $*"
  [ "$MODE" = dry ] || "$@"
}

if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found; use --dry-run or --cpu-smoke"; exit 2; }
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: torch sees no GPU ($PY)"; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

START=$(date +%s)
if [ "$MODE" != dry ]; then
  rm -rf "$OUT/runs"
  mkdir -p "$OUT/runs"
fi
run "$PY" benchmarks/synth_data.py --out "$OUT/data28" --size 28 --channels 1 --train "$N_SMALL" --val 256
run "$PY" benchmarks/synth_data.py --out "$OUT/data$SIZE_R50" --size "$SIZE_R50" --channels 3 --train "$N_R50" --val 256
[ "$MODE" = dry ] || rm -rf "$OUT/shards$SIZE_R50"
run "$PY" -m medimg.prepare_data --folder "$OUT/data$SIZE_R50" --shards --out "$OUT/shards$SIZE_R50" \
  --image-size "$SIZE_R50"

SMI_PID=
if [ "$MODE" = gpu ]; then
  LINEBUF=$(command -v stdbuf >/dev/null && echo "stdbuf -oL")  # a line per sample, even if killed
  $LINEBUF nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
    > "$OUT/nvidia-smi.csv" 2>/dev/null &
  SMI_PID=$!
  trap '[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null' EXIT
fi

SKIPPED=()
for cfg in "${CONFIGS[@]}"; do
  read -r name model size ch bs steps amp compile est data <<<"$cfg"
  data=${data:-data$size}
  elapsed=$(( $(date +%s) - START ))
  if [ "$MODE" != dry ] && [ $((elapsed + est)) -gt "$BUDGET_S" ]; then
    SKIPPED+=("$name (needs ~${est}s, ${elapsed}s of ${BUDGET_S}s used)")
    continue
  fi
  work="$OUT/work/$name"
  echo "== $name (${elapsed}s elapsed)"
  cmd=("$PY" benchmarks/probe.py --profile-epoch 3 -- --train "$OUT/$data/train" --val "$OUT/$data/val"
       --model "$model" --in-channels "$ch" --batch-size "$bs" --epochs 3 --max-steps-per-epoch "$steps"
       --patience 0 --amp "$amp" --compile "$compile" --device "$DEVICE"
       --model-dir "$work/model" --output-data-dir "$work/data" --output-dir "$work/output" --checkpoint-dir "")
  if [ "$MODE" = dry ]; then
    echo "+ ${cmd[*]} > $OUT/runs/$name.log"
  else
    timeout $((est * 4 + 60)) "${cmd[@]}" > "$OUT/runs/$name.log" 2>&1
    rc=$?
    grep -E "epoch=|PROBE_RESULT" "$OUT/runs/$name.log" | sed -E 's/^(PROBE_RESULT .{0,160}).*/\1 .../' | tail -4
    [ $rc -eq 0 ] || echo "   $name failed (rc $rc): see $OUT/runs/$name.log"
  fi
done

[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
# JPEG decoding on the GPU (nvJPEG through torchvision.io.decode_jpeg) against PIL on the CPU, at 224 px
run "$PY" benchmarks/gpu_decode.py --folder "$OUT/data$SIZE_R50/train" --n $([ "$MODE" = cpu ] && echo 16 || echo 1024) \
  --device "$DEVICE"
echo
if [ "$MODE" = dry ]; then
  echo "+ $PY benchmarks/gpu_report.py $OUT"
  exit 0
fi
"$PY" benchmarks/gpu_report.py "$OUT"
rc=$?
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "skipped (time budget): $s"; done
echo "total $(( $(date +%s) - START ))s; logs in $OUT/runs, summary in $OUT/summary.json"
exit $rc
