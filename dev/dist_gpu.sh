#!/usr/bin/env bash
# dev/dist_gpu.sh: the data-parallel GPU path (common/dist.h + NCCL) on real GPUs: the evidence
# of issue [G]. Needs the built train_gpt (with NCCL), FineWeb-format data and the tokenizer.
#
#   part "one"     (1 GPU): the NCCL path at world size 1 (RANK=0 WORLD_SIZE=1: communicator,
#                  all-reduce of the gradients and loss, watchdog) against the plain path, 50 seed-
#                  preset steps from the same seeded init: every train loss within twice the spread
#                  of two plain runs (the attention backward's atomics make GPU runs differ)
#   part "losses"  (2 GPUs): 50 steps on 2 GPUs against 1 GPU, same tolerance rule
#   part "speed"   (2 GPUs): the full recipe's step at the seed preset, tokens/s of 2 GPUs >= 1.9x 1 GPU
#   part "eval"    (2 GPUs): the finale's evals of the same weights (1 step at learning rate 0) on
#                  1 and 2 GPUs: sliding-window BPB equal to 1e-5, its time <= 55% of 1 GPU's
#   part "resume"  (2 GPUs): a 2-GPU state saved at step 25, resumed on 1 GPU to 50: its losses
#                  against the straight 2-GPU run, same tolerance rule
#   part "kill"    (2 GPUs): kill -9 of rank 1 mid-training: every process gone within 30 s, a
#                  line naming the rank
#
#   dev/dist_gpu.sh [one] [losses] [speed] [eval] [resume] [kill]     (default: one; all six on 2 GPUs)
#   env: DATA_PATH, TOKENIZER_PATH, OUT (/tmp/dist_gpu), STEPS (50), PYTHON (python3)
# Prints a PASS/FAIL line per check (with the numbers); exit 1 when a check fails.
set -u
cd "$(dirname "$0")/.."
export DATA_PATH=${DATA_PATH:-./data/datasets/fineweb10B_sp1024}
export TOKENIZER_PATH=${TOKENIZER_PATH:-./data/tokenizers/fineweb_1024_bpe.model}
OUT=${OUT:-/tmp/dist_gpu}
STEPS=${STEPS:-50}
PYTHON=${PYTHON:-python3}
PARTS=${*:-one}
mkdir -p "$OUT"
FAILED=0
result() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; FAILED=1; fi; }
# training runs: seed preset, STEPS steps, no wallclock cap (the LR schedule is a function of the
# step), no evals, one step line per step
TRAIN="ITERATIONS=$STEPS WARMDOWN_ITERS=$((STEPS / 2)) MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=5 TRAIN_LOG_EVERY=1 VAL_LOSS_EVERY=0 TRAIN_ONLY=1 ZSTD_LEVEL=1"
run() { # NAME GPUS "ENV" [FLAGS...]: ./train_gpt on the first GPUS GPUs, log in $OUT/NAME.log
    local name=$1 gpus=$2 vars=$3
    shift 3
    env CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1))) NPROC=$gpus $vars ./train_gpt --run-id "$name" --out-dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}
losses() { grep -o "^step:[0-9]*/[0-9]* train_loss:[0-9.]*" "$OUT/$1.log" | sed 's/.*train_loss://' | tr '\n' ' '; }
# max |loss difference| of two logs (from step FIRST on)
maxdiff() { $PYTHON test/dist_compare.py losses "$OUT/$1.log" "$OUT/$2.log" 1e9 ${3:-0} | sed -n 's/.*max |loss difference| \([^ ]*\).*/\1/p'; }
# compare A B REF_A REF_B WHAT [FIRST]: max|A - B| <= 2 x max|REF_A - REF_B| (at least 1e-4)
compare() {
    local spread=$(maxdiff $3 $4 ${6:-0}) d=$(maxdiff $1 $2 ${6:-0})
    local tol=$($PYTHON -c "print(max(2 * $spread, 1e-4))")
    echo "  $1: $(losses $1)"
    echo "  $2: $(losses $2)"
    $PYTHON -c "import sys; sys.exit(0 if $d <= $tol else 1)"
    result $? "$5: max |loss difference| $d, tolerance $tol (2 x the spread $spread of $3 vs $4)"
}

for part in $PARTS; do case $part in
one)
    echo "== one: the NCCL path at world size 1 against the plain path ($STEPS steps)"
    run plain_a 1 "$TRAIN" && run plain_b 1 "$TRAIN" && run nccl1 1 "$TRAIN RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500"
    result $? "one: three runs complete"
    grep -q "^nccl:.*communicator of 1 ranks (NCCL_NVLS_ENABLE=0)" "$OUT/nccl1.log"
    result $? "one: the NCCL run built a communicator ($(grep -o '^nccl:.*' "$OUT/nccl1.log"))"
    compare nccl1 plain_a plain_a plain_b "one: NCCL path = plain path"
    ;;
losses)
    echo "== losses: $STEPS steps on 2 GPUs against 1 GPU"
    [ -f "$OUT/plain_b.log" ] || { run plain_a 1 "$TRAIN" && run plain_b 1 "$TRAIN"; }
    run two 2 "$TRAIN CHECK_SYNC_EVERY=10"
    result $? "losses: 2-GPU run completes, ranks bit-identical every 10 steps ($(grep -c 'check_sync:.*bit-identical' "$OUT/two.log") checks)"
    compare two plain_a plain_a plain_b "losses: 2 GPUs = 1 GPU"
    ;;
speed)
    echo "== speed: the seed preset's full step, 1 GPU then 2 GPUs"
    SPEED="ITERATIONS=60 WARMDOWN_ITERS=3500 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=20 TRAIN_LOG_EVERY=10 VAL_LOSS_EVERY=0 TRAIN_ONLY=1 ZSTD_LEVEL=1"
    run speed1 1 "$SPEED" && run speed2 2 "$SPEED"
    result $? "speed: both runs complete"
    t1=$(grep -o "^step:60/60 .*tok/s:[0-9]*" "$OUT/speed1.log" | sed 's/.*tok\/s://')
    t2=$(grep -o "^step:60/60 .*tok/s:[0-9]*" "$OUT/speed2.log" | sed 's/.*tok\/s://')
    grep "^step:60/60" "$OUT/speed1.log" "$OUT/speed2.log"
    $PYTHON -c "import sys; r = $t2 / $t1; print(f'  speedup {r:.3f}x'); sys.exit(0 if r >= 1.9 else 1)"
    result $? "speed: 2 GPUs $t2 tok/s vs 1 GPU $t1 tok/s (>= 1.9x)"
    ;;
eval)
    echo "== eval: the finale's evals of the same weights on 1 and 2 GPUs"
    EV="ITERATIONS=1 WARMUP_STEPS=0 MATRIX_LR=0 SCALAR_LR=0 TIED_EMBED_LR=0 MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 ZSTD_LEVEL=1"
    run eval1 1 "$EV" && run eval2 2 "$EV"
    result $? "eval: both runs complete"
    grep "_window \|_window_exact" "$OUT/eval1.log" "$OUT/eval2.log"
    $PYTHON test/dist_compare.py bpb "$OUT/eval2.log" "$OUT/eval1.log" 1e-5
    result $? "eval: every final eval (standard, round trip, sliding) of 2 GPUs = 1 GPU to 1e-5"
    s1=$(grep -o "final_int6_sliding_window .*eval_time:[0-9]*" "$OUT/eval1.log" | sed 's/.*eval_time://')
    s2=$(grep -o "final_int6_sliding_window .*eval_time:[0-9]*" "$OUT/eval2.log" | sed 's/.*eval_time://')
    $PYTHON -c "import sys; sys.exit(0 if $s2 <= 0.55 * $s1 else 1)"
    result $? "eval: sliding window ${s2} ms on 2 GPUs vs ${s1} ms on 1 GPU (<= 55%)"
    ;;
resume)
    echo "== resume: a 2-GPU state resumed on 1 GPU"
    [ -f "$OUT/two.log" ] || run two 2 "$TRAIN"
    [ -f "$OUT/plain_b.log" ] || { run plain_a 1 "$TRAIN" && run plain_b 1 "$TRAIN"; }
    run two_stop 2 "$TRAIN" --stop-step $((STEPS / 2)) && run two_to_one 1 "$TRAIN" --resume "$OUT/two_stop/train_state.ckpt"
    result $? "resume: stop at $((STEPS / 2)) on 2 GPUs, resume on 1 GPU to $STEPS"
    compare two_to_one two plain_a plain_b "resume: steps $((STEPS / 2 + 1))-$STEPS of the resumed run = the 2-GPU run" $((STEPS / 2 + 1))
    ;;
kill)
    echo "== kill: kill -9 of rank 1 during training"
    env CUDA_VISIBLE_DEVICES=0,1 ITERATIONS=100000 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=0 TRAIN_LOG_EVERY=1 VAL_LOSS_EVERY=0 TRAIN_ONLY=1 \
        ./train_gpt --run-id kill --out-dir "$OUT/kill" > "$OUT/kill.log" 2>&1 &
    launcher=$!
    for i in $(seq 600); do grep -q "^step:5/" "$OUT/kill.log" && break; sleep 0.5; done
    workers=$(pgrep -P $launcher | sort -n | tr '\n' ' ')
    rank1=$(echo $workers | cut -d' ' -f2)
    t0=$(date +%s.%N)
    kill -9 "$rank1"
    for i in $(seq 300); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
    t=$($PYTHON -c "print(round($(date +%s.%N) - $t0, 1))")
    left=""
    for p in $launcher $workers; do kill -0 $p 2>/dev/null && left="$left $p"; done
    [ -n "$left" ] && kill -9 $left
    tail -5 "$OUT/kill.log"
    [ -z "$left" ] && grep -q "launcher: rank 1 was killed by signal 9" "$OUT/kill.log"
    result $? "kill: every process gone ${t}s after kill -9 of rank 1 (pid $rank1; within 30 s), the launcher names it"
    ;;
*) echo "unknown part $part (one losses speed eval resume kill)"; exit 2 ;;
esac; done
exit $FAILED
