#!/usr/bin/env bash
# qwen-sft vs TRL on one GPU: Qwen1.5-0.5B and Qwen1.5-7B shapes (random init, no weights, no internet),
# LoRA, bf16, packed 2048-token rows; tokens/s, MFU and peak GPU memory, both trainers in the same run.
#
#   bash bench/gpu.sh            # on the GPU machine, from anywhere; ~3-4 minutes on one H200 (hard limit 470 s)
#   bash bench/gpu.sh --smoke    # CPU, tiny shapes: checks that the script works (the test suite runs this)
#   PYTHON=/path/to/python bash bench/gpu.sh     # another interpreter (default: .venv/bin/python, else python3)
#
# Writes the table to $OUT/gpu_table.md when $OUT is set, else to bench/gpu_table.md (plus the log beside it), then
# checks the forecast: `qwen-sft check`'s predicted peak memory and wall time vs a real run -> forecast_table.md.
# Any further arguments go to bench/gpu_bench.py (--models, --seq-len, --warmup, --steps, --timeout).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
SMOKE=0
for arg in "$@"; do
    [[ "$arg" == "--smoke" ]] && SMOKE=1
done
if [[ -n "${PYTHON:-}" ]]; then
    :
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON="python3"
fi
OUT_DIR="${OUT:-$ROOT/bench}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_bench.log"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # qwen_sft from this checkout, installed or not
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export QWEN_SFT_CACHE="${QWEN_SFT_CACHE:-$ROOT/.cache}"
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"

echo "[gpu.sh] $(date '+%H:%M:%S') python: $PYTHON; output: $OUT_DIR"
# Up front: every package the benchmark imports, and CUDA (unless --smoke). Says what is missing, then stops.
if ! "$PYTHON" - "$SMOKE" <<'EOF'
import importlib, sys
smoke = sys.argv[1] == "1"
missing = []
for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers", "yaml", "qwen_sft.train.recipe"):
    try:
        module = importlib.import_module(name)
        print(f"[gpu.sh]   {name:<15} {getattr(module, '__version__', 'ok')}")
    except Exception as err:  # ImportError, or a broken install raising something else
        missing.append(f"{name} ({type(err).__name__}: {err})")
if not missing and not smoke:
    import torch
    if not torch.cuda.is_available():
        missing.append(f"CUDA (torch {torch.__version__} sees no GPU; a CPU-only torch build?)")
    else:
        print(f"[gpu.sh]   cuda            {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
if missing:
    print("[gpu.sh] MISSING: " + "; ".join(missing), file=sys.stderr)
    print("[gpu.sh] install them (offline: pip install --no-index --find-links <wheel dir> ...) and run again; "
          "qwen_sft is imported from ./src, so only its dependencies are needed", file=sys.stderr)
    sys.exit(3)
EOF
then
    exit 3
fi

if [[ $SMOKE == 1 ]]; then LIMIT=300; else LIMIT=470; fi  # the whole run stays under 8 minutes
echo "[gpu.sh] $(date '+%H:%M:%S') running bench/gpu_bench.py $* (log: $LOG)"
set +e
timeout --kill-after=10 "$LIMIT" "$PYTHON" "$ROOT/bench/gpu_bench.py" --table "$OUT_DIR/gpu_table.md" "$@" 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
if [[ $STATUS == 124 || $STATUS == 137 ]]; then
    echo "[gpu.sh] gave up after $LIMIT s (see $LOG)" >&2
fi

# The forecast (`qwen-sft check`) vs a real `train` of the 0.5B shape (smoke: tiny), in what is left of 9 minutes
FORECAST_LIMIT=$(( 540 - SECONDS < 150 ? 540 - SECONDS : 150 ))
FORECAST_STATUS=0
if (( FORECAST_LIMIT > 30 )); then
    echo "[gpu.sh] $(date '+%H:%M:%S') forecast vs measured: bench/forecast_bench.py (limit $FORECAST_LIMIT s)"
    set +e
    SMOKE_ARGS=(); [[ $SMOKE == 1 ]] && SMOKE_ARGS=(--smoke)
    timeout --kill-after=10 "$FORECAST_LIMIT" "$PYTHON" "$ROOT/bench/forecast_bench.py" "${SMOKE_ARGS[@]}" \
        --table "$OUT_DIR/forecast_table.md" >> "$LOG" 2>&1
    FORECAST_STATUS=$?
    set -e
    [[ -f "$OUT_DIR/forecast_table.md" ]] && cat "$OUT_DIR/forecast_table.md"
else
    echo "[gpu.sh] no time left for the forecast check" >&2
fi
echo "[gpu.sh] $(date '+%H:%M:%S') exit $STATUS (forecast $FORECAST_STATUS); tables: $OUT_DIR/gpu_table.md," \
    "$OUT_DIR/forecast_table.md"
if [[ $STATUS == 0 ]]; then STATUS=$FORECAST_STATUS; fi
exit "$STATUS"
