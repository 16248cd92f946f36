# test_bench.sh: what can be checked of the issue [F] benchmark without a GPU: PROFILE on the CPU
# path (GPU only: a notice, then a normal run with the perf line), the model-FLOPs formula of
# common/model.h against the yardstick's and a count from the tensors, the yardstick's kernel
# families and trace parsing, dev/yardstick.py end to end on a tiny CPU model (no compile, no
# profiler), dev/bench_table.py on made-up logs, dev/bench.sh's input checks. The benchmark
# itself needs an H200: `bash dev/bench.sh` (docs/RESULTS.md).
BD=$TEST_TMP/bench
mkdir -p $BD
$PYTHON test/loader_ref.py gen $BD/data --vocab 64 --seed 7 --train 6000,5000 --val 3000 >/dev/null
TINYB="OMP_NUM_THREADS=1 VOCAB_SIZE=64 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 BIGRAM_VOCAB_SIZE=64 BIGRAM_DIM=16
       TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 WARMUP_STEPS=1 MAX_WALLCLOCK_SECONDS=0 DATA_PATH=$BD/data TRAIN_ONLY=1 ZSTD_LEVEL=3"
TINYB=$(echo $TINYB)

check "bench: --help documents PROFILE / --profile" \
    bash -c "$ROOT/train_gpt --help | grep -E -- '--profile V +PROFILE +0 +GPU only'"
check "bench: PROFILE=1 on the CPU: a notice that it is GPU only, then the run with its perf line" \
    bash -c "cd $BD && env $TINYB PROFILE=1 ITERATIONS=3 OUT_DIR=$BD/out $ROOT/train_gpt --device cpu --run-id prof > prof.log 2>&1 &&
             grep -q '^profile: PROFILE is GPU only; the CPU path has no profiler, so it is ignored' prof.log &&
             grep -Eq '^perf: steps:3 step_avg:[0-9.]+ms tok/s:[0-9]+ model_TFLOP/s:[0-9.]+ ceiling:[0-9.]+% of 790 flops_per_token:[0-9]+ peak_memory:-$' prof.log &&
             ! grep -q '^profile: attention' prof.log"
check "bench: model FLOPs per token: model.h (--dry-run) = yardstick = tensor count, 3 configs + by hand" \
    $PYTHON test/bench_checks.py flops "$ROOT/train_gpt"
check "bench: kernel names -> PROFILE families; chrome trace -> breakdown lines" $PYTHON test/bench_checks.py families
check "bench: the yardstick's fullgraph compile falls back to graph breaks with a warning" $PYTHON test/bench_checks.py compiled
check "bench: bench_table.py: numbers, ratios, attention TFLOP/s, PASS/MISS, n/a for a missing log" \
    $PYTHON test/bench_checks.py table "$BD/table"
check "bench: ncu_table.py: per-kernel rows, family sums, bad units and files refused" \
    $PYTHON test/bench_checks.py ncu "$BD/ncu"
check "bench: dev/yardstick.py on a tiny CPU model (3 timed steps, sliding eval), finite losses" \
    bash -c "OMP_NUM_THREADS=1 $PYTHON dev/yardstick.py --device cpu --no-compile --data-path $BD/data --steps 3 --warmup 1 \
             --eval-tokens 1024 --set VOCAB_SIZE=64 --set NUM_LAYERS=2 --set MODEL_DIM=64 --set NUM_HEADS=4 --set NUM_KV_HEADS=2 \
             --set BIGRAM_VOCAB_SIZE=64 --set BIGRAM_DIM=16 --set TRAIN_BATCH_TOKENS=1024 --set TRAIN_SEQ_LEN=64 \
             --set EVAL_SEQ_LEN=128 --set EVAL_STRIDE=32 --set EVAL_BATCH_SEQS=4 > $BD/yard.log 2>&1 &&
             grep -Eq '^yardstick_perf: steps:3 step_avg:[0-9.]+ms tok/s:[0-9]+ .* flops_per_token:[0-9]+ peak_allocated:-' $BD/yard.log &&
             grep -q '^yardstick_profile: skipped (kernel families need CUDA)' $BD/yard.log &&
             grep -Eq '^yardstick_sliding: windows:32 tokens_scored:[0-9]+ time:[0-9.]+s scored_tok/s:[0-9]+ val_loss:[0-9.]+ ' $BD/yard.log &&
             grep -Eq 'loss first:[0-9.]+ last:[0-9.]+' $BD/yard.log || { cat $BD/yard.log; exit 1; }"
check_fail "bench: dev/yardstick.py rejects an unknown --set key in one line" 1 "^error: --set 'NOPE=1': unknown key NOPE" \
    $PYTHON dev/yardstick.py --device cpu --data-path $BD/data --set NOPE=1
check_fail "bench: dev/sdpa_attention.py refuses an unknown backend in one line" 1 "^sdpa_attention.py: --backends: unknown backend 'nope'" \
    $PYTHON dev/sdpa_attention.py --backends cudnn,nope
if nvidia-smi -L >/dev/null 2>&1; then
    skip "bench: dev/sdpa_attention.py without a GPU says so" "a GPU is here (it would run the benchmark)"
else
    check_fail "bench: dev/sdpa_attention.py without a GPU says so in one line" 1 "^sdpa_attention.py: needs a CUDA GPU" \
        $PYTHON dev/sdpa_attention.py --reps 1
fi
# dev/ab.sh (builds side by side in one call): its input checks, and a CPU smoke run of the
# whole script (two variants, one with a setting of its own, two rounds) on the tiny model
check_fail "bench: dev/ab.sh without DATA_PATH says what it needs" 1 "^ab: DATA_PATH must name the directory" \
    env -u DATA_PATH bash dev/ab.sh ./train_gpt
check_fail "bench: dev/ab.sh names a variant whose binary is missing" 1 "^ab: $BD/nope \\(variant '$BD/nope:X=1'\\): not an executable file" \
    env DATA_PATH=$BD/data bash dev/ab.sh ./train_gpt $BD/nope:X=1
check_fail "bench: dev/ab.sh refuses a setting that is not VAR=value" 1 "^ab: variant './train_gpt:lr': 'lr' is not a VAR=value setting" \
    env DATA_PATH=$BD/data bash dev/ab.sh ./train_gpt:lr
check_fail "bench: dev/ab.sh refuses a bad AB_STEPS" 1 "^ab: AB_STEPS=x: not a whole number" \
    env DATA_PATH=$BD/data AB_STEPS=x bash dev/ab.sh ./train_gpt
check "bench: dev/ab.sh on the CPU: two variants x two rounds, a table row each, the setting in its own runs only" \
    bash -c "env $TINYB AB_DEVICE=cpu AB_ROUNDS=2 AB_STEPS=2 AB_WARMUP=1 AB_DIR=$BD/ab bash dev/ab.sh $ROOT/train_gpt \
             $ROOT/train_gpt:MATRIX_LR=0.01 > $BD/ab.log 2>&1 &&
             grep -Eq '^variant \(ms/step\) +run 1 +run 2 +mean +last loss$' $BD/ab.log &&
             [ \$(grep -cE '^/.*train_gpt(:MATRIX_LR=0.01)? +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$' $BD/ab.log) = 2 ] &&
             grep -Eq '^\| MATRIX_LR +\| 0.01 ' $BD/ab/ab_v2_r2.log && ! grep -Eq '^\| MATRIX_LR +\| 0.01 ' $BD/ab/ab_v1_r2.log ||
             { cat $BD/ab.log; exit 1; }"
check_fail "bench: dev/bench.sh without DATA_PATH says what it needs" 1 "^bench: DATA_PATH must name the directory" \
    env -u DATA_PATH bash dev/bench.sh
check_fail "bench: dev/bench.sh refuses a bad BENCH_STEPS" 1 "^bench: BENCH_STEPS=x: not a whole number" \
    env DATA_PATH=$BD/data BENCH_STEPS=x bash dev/bench.sh
# dev/bench.sh end to end in its CPU smoke mode (BENCH_DEVICE=cpu, a tiny model through the
# environment and YARDSTICK_ARGS): every step runs and logs, the table comes out; no profile on
# the CPU, so its targets are n/a and the exit status 1. The sliding evals need the shared
# tokenizer (./eval checks the vocabulary against it).
BENCH_TOK=$ROOT/../shared/data/tokenizers/fineweb_1024_bpe.model
BENCH_TINY="VOCAB_SIZE=1024 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 BIGRAM_VOCAB_SIZE=64 BIGRAM_DIM=16 TRAIN_SEQ_LEN=64
            TRAIN_BATCH_TOKENS=1024 EVAL_SEQ_LEN=128 EVAL_BATCH_SEQS=4"
BENCH_TINY=$(echo $BENCH_TINY)
BENCH_SETS=$(for kv in $BENCH_TINY; do printf -- '--set %s ' "$kv"; done)
if [ -f "$BENCH_TOK" ]; then BENCH_EVAL=1024; else BENCH_EVAL=0; skip "bench: the sliding evals of dev/bench.sh (CPU smoke)" "no shared tokenizer at $BENCH_TOK"; fi
check "bench: dev/bench.sh end to end on the CPU (tiny model): every log, the table, n/a for the profile" \
    bash -c "env OMP_NUM_THREADS=1 $BENCH_TINY DATA_PATH=$BD/data TOKENIZER_PATH=$BENCH_TOK BENCH_DEVICE=cpu BENCH_DIR=$BD/run \
                 BENCH_STEPS=3 BENCH_WARMUP=1 BENCH_YARD_WARMUP=1 BENCH_EVAL_TOKENS=$BENCH_EVAL PYTHON=$PYTHON \
                 YARDSTICK_ARGS='$BENCH_SETS' bash dev/bench.sh > $BD/bench.out 2>&1; rc=\$?
             [ \$rc = 1 ] && grep -q '^bench: some results are missing' $BD/bench.out &&
             grep -Eq '^train tokens/s +[0-9]+ +[0-9]+ +[0-9.]+x' $BD/bench.out &&
             grep -Eq '^flops/token \(model.h formula\) +([0-9]+) +\1 ' $BD/bench.out &&
             grep -Eq '^target: attention fwd >= 450 TFLOP/s +- +n/a' $BD/bench.out &&
             grep -q '^perf: steps:3 ' $BD/run/ours_plain.log && grep -q '^profile: PROFILE is GPU only' $BD/run/ours_profile.log &&
             grep -q '^yardstick_perf: steps:3 ' $BD/run/yardstick.log && cmp -s $BD/run/table.txt <(tail -n \$(wc -l < $BD/run/table.txt) $BD/bench.out) &&
             if [ $BENCH_EVAL -gt 0 ]; then grep -Eq '^sliding scored tokens/s +[0-9]+ +[0-9]+ +[0-9.]+x' $BD/bench.out; fi ||
             { cat $BD/bench.out; exit 1; }"
