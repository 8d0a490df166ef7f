#!/usr/bin/env bash
# The one-command GPU check (issue 16): install the carried wheels, print the device, run the
# cuda-marked tests, measure (benchmarks/gpu_check.py: SVI step, epoch, IWAE_5000, PixelCNN,
# mixed precision), run a short list of GPU-relevant tests, judge the targets.
#
# On the GPU machine, through the device tool, after `make gpu-kit` here:
#     run(command="bash benchmarks/gpu_check.sh", carry=["gpu-kit"], timeout_s=570)
# Here, on the CPU, tiny sizes (what tests/benchmarks/test_gpu_check.py runs):
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --dry-run
#
# Everything lands in $OUT (default runs/gpu_check), five files at most: gpu_check.json (every
# part's status and numbers, rewritten as each part goes, so what finished survives a later
# failure), gpu_check.log (all output), nvidia_smi.txt, pytest_tests_cuda.log, pytest_tests_short.log.
# Each part runs in its own process under `timeout`; the boxes shrink so that the whole run
# stays inside GPU_CHECK_BUDGET seconds (default 450: the device tool allows 600 per command,
# the issue 480). Environment: PYTHON (default python3), GPU_KIT (default ./gpu-kit),
# GPU_CHECK_PARTS (a rerun of some parts, e.g. "epoch tests_short"; default all),
# GPU_CHECK_SHORT_BOX (seconds for tests_short, default 150).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
KIT=${GPU_KIT:-$ROOT/gpu-kit}
BUDGET=${GPU_CHECK_BUDGET:-450}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# compiler caches and scratch outside $OUT (only eight files come back from there)
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor TRITON_CACHE_DIR=$WORK/triton
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
LOG=$OUT/gpu_check.log
: >"$LOG"
START=$SECONDS
say() { echo "$*" | tee -a "$LOG"; }

say "== gpu_check.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC') dry_run=$DRY budget=${BUDGET}s"
if compgen -G "$KIT/*.whl" >/dev/null; then
    say "== installing $(cd "$KIT" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$WORK/site" "$KIT"/*.whl 2>&1 | tee -a "$LOG" \
        || say "installing the wheels failed: the parts that need them will fail"
    export PYTHONPATH=$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}
else
    say "== no wheels in $KIT: using the installed packages"
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
DATA=()
if (( ! DRY )) && compgen -G "$KIT/train-images-idx3-ubyte*" >/dev/null; then
    DATA=(--data-root "$KIT")
elif (( ! DRY )); then
    say "== no Fashion-MNIST IDX files in $KIT: the parts fall back on the default folder"
    DATA=(--data-root /usr/share/datasets/fashion-mnist)
fi
COMMON=(--out-dir "$OUT" --work-dir "$WORK/work" "${DATA[@]}")
(( DRY )) && COMMON+=(--dry-run)
check() { "$PY" benchmarks/gpu_check.py "${COMMON[@]}" "$@"; }

if command -v nvidia-smi >/dev/null; then
    nvidia-smi 2>&1 | tee "$OUT/nvidia_smi.txt" >>"$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv 2>&1 | tee -a "$LOG"
fi

left() { echo $((BUDGET - (SECONDS - START))); }

# chosen PART: true when GPU_CHECK_PARTS (space-separated part names) is unset or names PART
chosen() { [[ -z ${GPU_CHECK_PARTS:-} || " $GPU_CHECK_PARTS " == *" $1 "* ]]; }

# run_part BOX PART...: the chosen parts in one process, time-boxed; unfinished ones are marked.
run_part() {
    local box=$1 rest part parts=()
    shift
    for part in "$@"; do chosen "$part" && parts+=("$part"); done
    (( ${#parts[@]} )) || return 0
    set -- "${parts[@]}"
    rest=$(left)
    (( box > rest )) && box=$rest
    if (( box < 15 )); then
        say "== $*: skipped, ${rest} s left of the budget"
        check --part "$@" --record-status skipped --message "out of the ${BUDGET} s budget"
        return
    fi
    timeout -k 10 "$box" "$PY" benchmarks/gpu_check.py "${COMMON[@]}" --part "$@" \
        --deadline $((box - 10)) 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if (( rc == 124 || rc == 137 )); then
        say "== $*: stopped after ${box} s"
        check --part "$@" --record-status timeout --message "stopped after its ${box} s box"
    elif (( rc != 0 )); then
        check --part "$@" --record-status crashed --message "the process exited with status $rc"
    fi
}

# run_tests NAME BOX PYTEST-ARGS...: pytest into $OUT/pytest_NAME.log, recorded as part NAME.
run_tests() {
    local name=$1 box=$2 rest rc
    shift 2
    chosen "$name" || return 0
    rest=$(left)
    (( box > rest )) && box=$rest
    say "== $name: pytest $*"
    if (( DRY )); then  # the suite runs these itself; here only check that they exist
        for path in "$@"; do
            [[ $path != tests* || -e $path ]] || { say "missing: $path"; rc=1; }
        done
        check --part "$name" --record-tests "${rc:-0}" --message "dry run: files present, not run"
        return
    fi
    if (( box < 15 )); then
        check --part "$name" --record-status skipped --message "out of the ${BUDGET} s budget"
        return
    fi
    timeout -k 10 "$box" "$PY" -m pytest -q -p no:cacheprovider -p benchmarks.pytest_live_failures "$@" >"$OUT/pytest_$name.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/pytest_$name.log" | tee -a "$LOG"
    check --part "$name" --record-tests "$rc" --log "$OUT/pytest_$name.log"
}

if (( DRY )); then  # one process: imports dominate at these sizes
    run_part 300 device svi_step epoch iwae pixelcnn mixed_precision
    run_tests tests_cuda 90 -m cuda tests
    run_tests tests_short "${GPU_CHECK_SHORT_BOX:-150}" tests/inference/training/test_svi_step.py \
        tests/inference/training/test_compiled_step.py tests/inference/training/test_mixed_precision.py \
        tests/examples/test_vae_example.py
else
    run_part 40 device
    run_tests tests_cuda 90 -m cuda tests
    run_part 130 svi_step
    run_part 80 epoch
    run_part 45 iwae
    run_part 50 pixelcnn
    run_part 45 mixed_precision
    # the CPU-side tests of the code measured above, and the VAE example on the GPU
    # (its --device auto picks CUDA): last, with what is left of the budget
    run_tests tests_short "${GPU_CHECK_SHORT_BOX:-150}" tests/inference/training/test_svi_step.py \
        tests/inference/training/test_compiled_step.py tests/inference/training/test_mixed_precision.py \
        tests/examples/test_vae_example.py
fi
say "== done in $((SECONDS - START)) s"
check --summary 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
