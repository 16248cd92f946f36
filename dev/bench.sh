#!/usr/bin/env bash
# bench.sh: the same-call benchmark of issue [F] on one GPU: ./train_gpt against the PyTorch
# yardstick (dev/yardstick.py: our dev/ref model trained the record script's way), same GPU,
# same data, same batch, in one call, then the sliding-window evals of both; ends with one table
# (dev/bench_table.py): ms/step, tokens/s, model TFLOP/s and % of 790, peak memory, the
# per-family breakdown side by side, sliding-eval scored tokens/s, the ratios and the targets.
#
#   make train_gpt eval && DATA_PATH=... TOKENIZER_PATH=... bash dev/bench.sh
#
# What runs (each log in $BENCH_DIR):
#   1. ours_plain.log    ./train_gpt, seed preset, BENCH_STEPS timed steps after WARMUP_STEPS=
#                        BENCH_WARMUP, no wallclock cap, no warmdown and no late QAT (the LR
#                        multiplier stays 1: the yardstick does the same work), no evals
#                        (TRAIN_ONLY=1), ZSTD_LEVEL=3; its checkpoint feeds step 4
#   2. ours_profile.log  the same with PROFILE=1 (every other step profiled by kernel family)
#   3. yardstick.log     python3 dev/yardstick.py: BENCH_YARD_WARMUP warm-up steps (compile),
#                        BENCH_STEPS timed, 2 under torch.profiler, then its sliding eval on
#                        the first BENCH_EVAL_TOKENS val tokens
#   4. ours_eval.log     ./eval on run 1's checkpoint, the same val tokens (VAL_MAX_TOKENS),
#                        stride 64, windows of 2048 (its standard eval runs first, untimed here)
#   5. record.log        (only when BENCH_RECORD names the public record script, by default
#                        .carry/record/train_gpt.py if it is there; not part of this repo) the
#                        record script itself, FlashAttention 3 replaced by SDPA as in
#                        dev/record_eval.py, seed-preset model, BENCH_STEPS steps after 5 warm-up
#                        steps, no sliding eval, run in $BENCH_DIR/record (it writes its files
#                        to the working directory): the check that the yardstick is at least as
#                        fast as the record script. Adds about 2-3 minutes (compile, its finale).
# Settings (environment):
#   BENCH_DIR          where the logs go (default logs/bench; emptied of old logs first)
#   BENCH_STEPS        timed steps, both sides (default 20)
#   BENCH_WARMUP       ./train_gpt's warm-up steps (default 5; undone, off the clock)
#   BENCH_YARD_WARMUP  the yardstick's warm-up steps (default 5; torch.compile's first steps)
#   BENCH_EVAL_TOKENS  val tokens of the sliding evals (default 1048576; 0 skips both)
#   BENCH_SKIP         space-separated steps to skip: plain profile yardstick eval record (their old
#                      logs, if any, are kept and used)
#   YARDSTICK_ARGS     extra arguments for dev/yardstick.py (e.g. "--sdpa cudnn --gqa native")
#   PYTHON             the Python with torch (default python3)
#   BENCH_DEVICE       cuda (default), or cpu: a smoke run of the plumbing for the test suite
#                      (tiny config through the environment and YARDSTICK_ARGS; no profile)
# About 5-6 minutes on an H200 at the defaults (torch.compile of the model, the optimizer's
# Newton-Schulz and the eval forward is most of the yardstick's time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${BENCH_DIR:-logs/bench}
STEPS=${BENCH_STEPS:-20}
WARM=${BENCH_WARMUP:-5}
YWARM=${BENCH_YARD_WARMUP:-5}
EVAL_TOKENS=${BENCH_EVAL_TOKENS:-1048576}
SKIP=" ${BENCH_SKIP:-} "
PY=${PYTHON:-python3}
DEV=${BENCH_DEVICE:-cuda}

die() { echo "bench: $*" >&2; exit 1; }
[ -n "${DATA_PATH:-}" ] && [ -d "$DATA_PATH" ] || die "DATA_PATH must name the directory of the fineweb_*.bin shards"
for v in BENCH_STEPS:$STEPS BENCH_WARMUP:$WARM BENCH_YARD_WARMUP:$YWARM BENCH_EVAL_TOKENS:$EVAL_TOKENS; do
    [[ ${v#*:} =~ ^[0-9]+$ ]] || die "${v%%:*}=${v#*:}: not a whole number"
done
[ "$DEV" = cuda ] || [ "$DEV" = cpu ] || die "BENCH_DEVICE=$DEV: must be cuda or cpu"
[ -x ./train_gpt ] && [ -x ./eval ] || die "build first: make train_gpt eval"
YDEV=(--device "$DEV")
[ "$DEV" = cuda ] || YDEV+=(--no-compile)
[ "$STEPS" -ge 2 ] || die "BENCH_STEPS=$STEPS: need at least 2 (PROFILE profiles every other step)"
if [ "$EVAL_TOKENS" -gt 0 ] && [ -z "${TOKENIZER_PATH:-}" ]; then die "TOKENIZER_PATH must name the .model file (./eval needs it)"; fi
mkdir -p "$DIR"
skipped() { [[ $SKIP == *" $1 "* ]]; }
for s in plain profile yardstick eval record; do skipped $s || rm -f "$DIR/ours_$s.log" "$DIR/$s.log"; done
RECORD=${BENCH_RECORD:-}
if [ -z "$RECORD" ] && [ -f .carry/record/train_gpt.py ]; then RECORD=.carry/record/train_gpt.py; fi
if [ -n "$RECORD" ]; then
    [ -f "$RECORD" ] || die "BENCH_RECORD=$RECORD: no such file"
    RECORD=$(cd "$(dirname "$RECORD")" && pwd)/$(basename "$RECORD")
fi
T0=$SECONDS
stamp() { echo "bench: [$((SECONDS - T0))s] $*"; }

# the shape, for the table's attention TFLOP/s (the seed preset's, as both sides run it)
eval "$(./train_gpt --dry-run | awk '$2=="NUM_LAYERS"{print "L="$4} $2=="MODEL_DIM"{print "D="$4} $2=="TRAIN_SEQ_LEN"{print "T="$4} $2=="TRAIN_BATCH_TOKENS"{print "TOK="$4}')"
{
    echo "shape: L:$L D:$D T:$T tokens_per_step:$TOK grad_accum:8"
    echo "date: $(date -u +%FT%TZ) commit: $(./train_gpt --version | awk '{print $2}') steps:$STEPS warmup:$WARM yard_warmup:$YWARM eval_tokens:$EVAL_TOKENS"
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || true
} > "$DIR/bench.env"
cat "$DIR/bench.env"

ours() { # log, extra env...
    local log=$1; shift
    env ITERATIONS="$STEPS" WARMUP_STEPS="$WARM" MAX_WALLCLOCK_SECONDS=0 WARMDOWN_ITERS=0 LATE_QAT_THRESHOLD=0 \
        TRAIN_ONLY=1 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 TRAIN_LOG_SECONDS=0 ZSTD_LEVEL=3 NPROC=1 \
        RUN_ID="bench_$(basename "$log" .log)" "$@" ./train_gpt --device "$DEV" > "$DIR/$log" 2>&1 ||
        die "./train_gpt failed: see $DIR/$log (last lines: $(tail -n 3 "$DIR/$log" | tr '\n' ' '))"
}

if ! skipped plain; then
    stamp "1/4 ./train_gpt, $STEPS steps (plain)"
    ours ours_plain.log OUT_DIR="$DIR/ours"
    grep -E '^perf:' "$DIR/ours_plain.log" || true
fi
if ! skipped profile; then
    stamp "2/4 ./train_gpt, $STEPS steps (PROFILE=1)"
    ours ours_profile.log OUT_DIR="$DIR/ours_profile" PROFILE=1
    grep -E '^profile' "$DIR/ours_profile.log" || true
fi
if ! skipped yardstick; then
    stamp "3/4 dev/yardstick.py, $YWARM + $STEPS steps, sliding eval on $EVAL_TOKENS tokens"
    # shellcheck disable=SC2086  # YARDSTICK_ARGS is a list of arguments
    "$PY" dev/yardstick.py "${YDEV[@]}" --data-path "$DATA_PATH" --steps "$STEPS" --warmup "$YWARM" --profile-steps 2 \
        --eval-tokens "$EVAL_TOKENS" ${YARDSTICK_ARGS:-} > "$DIR/yardstick.log" 2>&1 ||
        echo "bench: the yardstick failed: see $DIR/yardstick.log (last lines: $(tail -n 3 "$DIR/yardstick.log" | tr '\n' ' '))" >&2
    grep -E '^yardstick_(perf|sliding)' "$DIR/yardstick.log" || true
fi
if ! skipped eval && [ "$EVAL_TOKENS" -gt 0 ]; then
    stamp "4/4 ./eval sliding window on $EVAL_TOKENS tokens"
    [ -f "$DIR/ours/final_model.ckpt" ] || die "no $DIR/ours/final_model.ckpt (step 1 writes it)"
    VAL_MAX_TOKENS="$EVAL_TOKENS" EVAL_STRIDE=64 ./eval --checkpoint "$DIR/ours/final_model.ckpt" --device "$DEV" \
        > "$DIR/ours_eval.log" 2>&1 || die "./eval failed: see $DIR/ours_eval.log"
    grep -E '^sliding_window ' "$DIR/ours_eval.log" || true
fi
if ! skipped record && [ -n "$RECORD" ] && [ "$DEV" = cuda ]; then
    stamp "5/5 the record script ($RECORD), 5 + $STEPS steps"
    mkdir -p "$DIR/record"
    # its own settings from the environment: the seed preset's model, the bench's schedule
    (cd "$DIR/record" && env BIGRAM_VOCAB_SIZE=10240 VE_ENABLED=0 ITERATIONS="$STEPS" WARMUP_STEPS=5 MAX_WALLCLOCK_SECONDS=0 \
        WARMDOWN_ITERS=0 LATE_QAT_THRESHOLD=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY="$STEPS" EVAL_STRIDE=0 RUN_ID=bench_record \
        "$PY" -c 'import runpy, sys; sys.path.insert(0, sys.argv[1]); import record_eval; record_eval.install_shims(); sys.argv = [sys.argv[2]]; runpy.run_path(sys.argv[0], run_name="__main__")' \
        "$ROOT/dev" "$RECORD") > "$DIR/record.log" 2>&1 ||
        echo "bench: the record script failed: see $DIR/record.log (last lines: $(tail -n 3 "$DIR/record.log" | tr '\n' ' '))" >&2
    grep -E "^step:$STEPS/$STEPS " "$DIR/record.log" || true
fi
stamp "done; the table (dev/bench_table.py $DIR):"
echo
"$PY" dev/bench_table.py "$DIR" | tee "$DIR/table.txt"
