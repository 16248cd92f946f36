#!/usr/bin/env bash
# dev/ab.sh: training builds, or settings of one build, timed side by side in one call. Times move
# between machines by 10% and more, so two builds are compared only within one call, and
# alternated (A B A B ...) so that a drift of the machine's clocks or temperature during the call
# falls on both. Each run is one process: the seed preset (or whatever the environment sets), the
# training loop only (TRAIN_ONLY=1: no validation; the artifact at zstd level 1), AB_WARMUP
# warm-up steps, then AB_STEPS timed steps; its `perf:` line gives ms/step. The table at the end
# has a row per variant: each run's ms/step, their mean, and the last step's train loss (the same
# data and init for every variant, so builds that compute the same numbers print the same loss at
# step 1 and nearly the same after: docs/RESULTS.md's step-1 checks).
#
#   DATA_PATH=... bash dev/ab.sh ./train_gpt old/train_gpt ./train_gpt:QK3_BWD=1
#
# A variant: a train_gpt binary, then optionally `:VAR=value` settings for its runs only (several:
# ./train_gpt:RMB_VERSION=1:XSA_BWD=1). Environment:
#   AB_ROUNDS   runs of each variant (default 2)       AB_STEPS   timed steps (default 12)
#   AB_WARMUP   warm-up steps (default 5)              AB_DIR     logs (default /tmp/ab), one per run
#   AB_DEVICE   cuda (default), or cpu for a smoke test of this script on a tiny model
# Exit status 1, with one line saying why, when an input is wrong or a run fails (its log named).
set -u
cd "$(dirname "$0")/.."
die() { echo "ab: $*" >&2; exit 1; }
whole() { [[ $2 =~ ^[0-9]+$ ]] || die "$1=$2: not a whole number"; }
ROUNDS=${AB_ROUNDS:-2}; STEPS=${AB_STEPS:-12}; WARM=${AB_WARMUP:-5}; DIR=${AB_DIR:-/tmp/ab}; DEV=${AB_DEVICE:-cuda}
whole AB_ROUNDS "$ROUNDS"; whole AB_STEPS "$STEPS"; whole AB_WARMUP "$WARM"
[ "$ROUNDS" -ge 1 ] && [ "$STEPS" -ge 1 ] || die "AB_ROUNDS and AB_STEPS must be at least 1"
[ "$DEV" = cuda ] || [ "$DEV" = cpu ] || die "AB_DEVICE=$DEV: cuda or cpu"
[ -n "${DATA_PATH:-}" ] || die "DATA_PATH must name the directory of the fineweb_train_*.bin / fineweb_val_*.bin shards"
[ $# -ge 1 ] || die "usage: dev/ab.sh VARIANT [VARIANT ...], a variant being a train_gpt binary[:VAR=value...]"
for v in "$@"; do
    bin=${v%%:*}
    [ -x "$bin" ] && [ -f "$bin" ] || die "$bin (variant '$v'): not an executable file"
    rest=${v#"$bin"}
    IFS=: read -r -a sets <<< "${rest#:}"
    for s in "${sets[@]}"; do
        [[ $s =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || die "variant '$v': '$s' is not a VAR=value setting"
    done
done
mkdir -p "$DIR" || die "cannot create AB_DIR=$DIR"

# one run: variant number i, round r -> its log; prints nothing
run() {
    local i=$1 r=$2 v=$3 bin=${3%%:*} rest=${3#"${3%%:*}"} log="$DIR/ab_v$1_r$2.log"
    local -a sets=()
    [ -n "$rest" ] && IFS=: read -r -a sets <<< "${rest#:}"
    # ZSTD_LEVEL=1: the artifact written after the timed steps is off the clock, but level 22 took
    # ~30 s of each ~45 s run on an H200
    env ITERATIONS="$STEPS" WARMUP_STEPS="$WARM" MAX_WALLCLOCK_SECONDS=0 WARMDOWN_ITERS=0 LATE_QAT_THRESHOLD=0 \
        ZSTD_LEVEL=1 TRAIN_ONLY=1 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 TRAIN_LOG_SECONDS=0 NPROC=1 OUT_DIR="$DIR/out_v$i" \
        RUN_ID="ab_v${i}_r$r" "${sets[@]}" "$bin" --device "$DEV" > "$log" 2>&1 ||
        die "variant '$v' failed in round $r: see $log (last line: $(tail -n 1 "$log"))"
    grep -q '^perf: ' "$log" || die "variant '$v', round $r: no perf: line in $log"
}
echo "ab: $# variant(s) x $ROUNDS round(s), $WARM warm-up + $STEPS timed steps each, device $DEV, logs in $DIR"
for r in $(seq 1 "$ROUNDS"); do
    i=0
    for v in "$@"; do
        i=$((i + 1))
        run "$i" "$r" "$v"
        echo "ab: round $r variant $i ($v): $(grep '^perf: ' "$DIR/ab_v${i}_r$r.log" | tail -n 1 | grep -oE 'step_avg:[0-9.]+ms')"
    done
done
# the table
printf '\n%-44s' "variant (ms/step)"
for r in $(seq 1 "$ROUNDS"); do printf ' %9s' "run $r"; done
printf ' %9s %11s\n' mean "last loss"
i=0
for v in "$@"; do
    i=$((i + 1))
    printf '%-44s' "$v"
    sum=0
    for r in $(seq 1 "$ROUNDS"); do
        ms=$(grep '^perf: ' "$DIR/ab_v${i}_r$r.log" | tail -n 1 | sed -E 's/.*step_avg:([0-9.]+)ms.*/\1/')
        printf ' %9s' "$ms"
        sum=$(awk -v a="$sum" -v b="$ms" 'BEGIN { printf "%.4f", a + b }')
    done
    loss=$(grep -E "^step:$STEPS/$STEPS train_loss:" "$DIR/ab_v${i}_r$ROUNDS.log" | tail -n 1 | sed -E 's/.*train_loss:([0-9.naif-]+).*/\1/')
    printf ' %9s %11s\n' "$(awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { printf "%.2f", s / n }')" "${loss:-?}"
done
