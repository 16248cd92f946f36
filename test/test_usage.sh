# test_usage.sh: what a new user hits first, on the CPU path: the default config on a machine
# without a GPU, bad files, a resume past ITERATIONS, the Makefile's zstd probe, Ctrl-C / SIGTERM,
# artifacts that do not depend on where they were written, the docs pointing only at files in
# the repository, and progress lines.
UD=$TEST_TMP/usage
mkdir -p $UD
$PYTHON test/loader_ref.py gen $UD/data --vocab 64 --seed 5 --train 6000,5000 --val 2000 >/dev/null
# a tiny model, ~0.15 s a step on one core (one OpenMP thread: the suite shares its 2 cores)
TINY="OMP_NUM_THREADS=1 VOCAB_SIZE=64 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 BIGRAM_VOCAB_SIZE=64 BIGRAM_DIM=16 VE_LAYERS=1
      TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 WARMUP_STEPS=0 MAX_WALLCLOCK_SECONDS=0 DATA_PATH=$UD/data TRAIN_ONLY=1 ZSTD_LEVEL=3"
TINY=$(echo $TINY)
gpu_here() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }

# 0. a training log names the build it came from (the same commit as --version)
check "a training log names its build (build:<commit>, as --version)" \
    bash -c "cd $UD && env $TINY ITERATIONS=1 $ROOT/train_gpt --device cpu --run-id build >/dev/null 2>&1 &&
             grep -qx \"build:\$($ROOT/train_gpt --version | cut -d' ' -f2-)\" $UD/logs/build.txt"

# 1. the default (full-size) config on the CPU: refused at once with the estimate and the README's
#    small example, before seconds of model init (it used to die in std::bad_alloc)
check_fail "default config on the CPU: refused at once with a memory estimate" 2 \
    "needs about [0-9.]+ GiB on the cpu but only .*NUM_LAYERS=2 MODEL_DIM=128" \
    bash -c "cd $UD && DATA_PATH=$UD/data TRAIN_ONLY=1 timeout 30 $ROOT/train_gpt --device cpu --run-id mem"
if gpu_here; then
    skip "--device auto without a GPU falls back to the CPU" "a GPU is here"
    skip "eval: --device cuda without a GPU says so" "a GPU is here"
else
    check_fail "--device auto (the default) without a GPU: a notice, then the CPU" 2 \
        "no usable GPU .*running on the CPU \(--device auto\).*needs about" \
        bash -c "cd $UD && DATA_PATH=$UD/data TRAIN_ONLY=1 timeout 30 $ROOT/train_gpt --run-id auto 2>&1 | tr '\n' ' '; exit \${PIPESTATUS[0]}"
    check_fail "train_gpt --device cuda without a GPU says there is none" 2 "--device cuda: no usable GPU here" \
        bash -c "cd $UD && DATA_PATH=$UD/data TRAIN_ONLY=1 $ROOT/train_gpt --device cuda --run-id nogpu"
fi

# 2. every input file is checked before anything large is allocated
check_fail "--resume /nope with the default config: names the file" 1 "/nope: no such file" \
    bash -c "cd $UD && timeout 30 $ROOT/train_gpt --device cpu --resume /nope"
check_fail "--init-ckpt /nope: names the file" 1 "/nope: no such file" \
    bash -c "cd $UD && timeout 30 env $TINY $ROOT/train_gpt --device cpu --init-ckpt /nope --run-id init"
check_fail "a bad train shard: named before the model is built" 1 "fineweb_train_000001.bin" \
    bash -c "mkdir -p $UD/bad && cp $UD/data/* $UD/bad/ && head -c 100 $UD/data/fineweb_train_000001.bin > $UD/bad/fineweb_train_000001.bin &&
             cd $UD && timeout 30 env DATA_PATH=$UD/bad TRAIN_ONLY=1 $ROOT/train_gpt --device cpu --run-id badshard"

# 3. a resume at or past ITERATIONS ends at once (it used to count up forever: step:55/12 ...)
check "a 6-step run leaves its state" bash -c "cd $UD && env $TINY ITERATIONS=6 $ROOT/train_gpt --device cpu --save-every 3 \
    --out-dir $UD/r6 --run-id r6 > $UD/r6.log 2>&1 && [ -f $UD/r6/train_state.ckpt ]"
check_fail "resume at step 6 with ITERATIONS=4: ends at once, says why" 0 "is at step 6 and ITERATIONS=4: nothing left to train" \
    bash -c "cd $UD && timeout 10 env $TINY ITERATIONS=4 $ROOT/train_gpt --device cpu --resume $UD/r6/train_state.ckpt --out-dir $UD/r4 --run-id r4"
check_fail "resume at step 6 with ITERATIONS=6: nothing to train either" 0 "nothing left to train" \
    bash -c "cd $UD && timeout 10 env $TINY ITERATIONS=6 $ROOT/train_gpt --device cpu --resume $UD/r6/train_state.ckpt --out-dir $UD/r4 --run-id r4b"

# 4. the Makefile's zstd probe can fail (it used to pass whatever was installed), and the
#    programs then stop with the install hint; where zstd is here the probe finds it
check "make: the zstd probe finds zstd where it is installed" bash -c \
    "[ ! -f /usr/include/zstd.h ] || make -n -B quantize 2>&1 | grep -q '✓ zstd found'"
check_fail "make: zstd.h missing -> the probe fails, the build stops with the hint" 2 \
    "✗ zstd not found.*apt-get install libzstd-dev" \
    bash -c "make -n -B quantize ZSTD_PROBE_HEADER=no_such_zstd.h 2>&1 | tr '\n' ' '; exit \${PIPESTATUS[0]}"
check_fail "make: a compiler that cannot see zstd.h (empty sysroot) -> not found" 2 "✗ zstd not found" \
    bash -c "mkdir -p $UD/sysroot && make -n -B quantize CXX='g++ --sysroot=$UD/sysroot' 2>&1; exit \${PIPESTATUS[0]}"
check "README: a Prerequisites section with the Debian packages" bash -c \
    "grep -q '^## Prerequisites' README.md && grep -q 'apt-get install.*libzstd-dev' README.md && grep -q 'nvidia-cuda-toolkit\|cuda-toolkit' README.md"

# 5. SIGINT / SIGTERM: the step finishes, the state is saved, the exit status is 128+signal, and
#    the resumed run's losses equal an uninterrupted run's, bit for bit (the CPU path)
SIG="env $TINY ITERATIONS=16 WARMDOWN_ITERS=6 TRAIN_LOG_EVERY=1 $ROOT/train_gpt --device cpu"
check "signals: an uninterrupted 16-step run" bash -c "cd $UD && $SIG --out-dir $UD/full --run-id full > $UD/full.log 2>&1"
interrupt_run() { # name signal -> runs until step 5 is logged, sends the signal, prints the exit status
    ( cd $UD && exec $SIG --out-dir $UD/$1 --run-id $1 > $UD/$1.log 2>&1 ) & local pid=$!
    for _ in $(seq 6000); do grep -q '^step:5/' $UD/$1.log 2>/dev/null && break; sleep 0.05; done
    kill -$2 $pid; wait $pid; echo $?
}
for sg in INT TERM; do
    want=$([ $sg = INT ] && echo 130 || echo 143)
    rc=$(interrupt_run sig$sg $sg)
    check "SIG$sg: exit status $want, the state saved, how to resume printed" bash -c "[ $rc = $want ] && [ -f $UD/sig$sg/train_state.ckpt ] &&
        grep -q 'interrupted by SIG$sg after step .*--resume $UD/sig$sg/train_state.ckpt' $UD/sig$sg.log"
    check "SIG$sg: the resumed run's losses equal the uninterrupted run's" bash -c "cd $UD &&
        $SIG --out-dir $UD/sig$sg --run-id sig${sg}r --resume $UD/sig$sg/train_state.ckpt > $UD/sig${sg}r.log 2>&1 &&
        diff <(grep -ho '^step:[0-9]*/16 train_loss:[0-9.]*' $UD/sig$sg.log $UD/sig${sg}r.log) <(grep -o '^step:[0-9]*/16 train_loss:[0-9.]*' $UD/full.log)"
done
# (steps of 8k tokens, ~1 s each: the second signal comes while the step the first one let finish runs)
check "a second Ctrl-C exits at once, without saving" bash -c "cd $UD; (exec env $TINY ITERATIONS=50 TRAIN_BATCH_TOKENS=8192 \
    TRAIN_LOG_EVERY=1 $ROOT/train_gpt --device cpu --out-dir $UD/twice --run-id twice > $UD/twice.log 2>&1) & pid=\$!;
    for _ in \$(seq 6000); do grep -q '^step:1/' $UD/twice.log 2>/dev/null && break; sleep 0.05; done; kill -INT \$pid;
    for _ in \$(seq 6000); do grep -q '^interrupt: finishing' $UD/twice.log 2>/dev/null && break; sleep 0.01; done; kill -INT \$pid;
    wait \$pid; rc=\$?; [ \$rc = 130 ] && ! grep -q 'saved training state' $UD/twice.log"

# 6. the artifact is a function of the weights and the model config: two runs of the same
#    training in different places, under different names, give byte-identical .ptz files
check "two runs with different RUN_ID/OUT_DIR: byte-identical .ptz" bash -c "cd $UD &&
    env $TINY ITERATIONS=4 $ROOT/train_gpt --device cpu --out-dir $UD/a1 --run-id one > /dev/null 2>&1 &&
    mkdir -p $UD/elsewhere && cd $UD/elsewhere && env $TINY ITERATIONS=4 RUN_ID=two OUT_DIR=$UD/some/where/else SAVE_EVERY=2 \
        $ROOT/train_gpt --device cpu > /dev/null 2>&1 && cmp $UD/a1/final_model.ptz $UD/some/where/else/final_model.ptz"
check "quantize: checkpoints differing only in RUN_ID/OUT_DIR give the same bytes" bash -c "
    build/ckpt_tool edit $UD/a1/final_model.ckpt $UD/renamed.ckpt RUN_ID=elsewhere OUT_DIR=/x/y RESUME=/z >/dev/null &&
    ! cmp -s $UD/a1/final_model.ckpt $UD/renamed.ckpt &&
    ./quantize --checkpoint $UD/a1/final_model.ckpt --out $UD/q1.ptz --zstd-level 3 >/dev/null &&
    ./quantize --checkpoint $UD/renamed.ckpt --out $UD/q2.ptz --zstd-level 3 >/dev/null && cmp $UD/q1.ptz $UD/q2.ptz"

# 7. eval says there is no GPU (it used to complain about the GPU path's head dim)
if ! gpu_here; then
    check_fail "eval: --device cuda without a GPU says so" 2 "--device cuda: no usable GPU here" \
        ./eval --checkpoint $UD/a1/final_model.ckpt --device cuda --data-path $UD/data
    check_fail "eval: the default (auto) without a GPU goes on on the CPU" 1 "eval: no usable GPU .*running on the CPU" \
        ./eval --checkpoint $UD/a1/final_model.ckpt --data-path $UD/data --tokenizer-path $UD/none.model
fi

# 8. the README, --help and the code point only at files in the repository; the recipe is in docs/
check "docs/RECIPE.md: the model, the schedule, quantization, BPB" bash -c \
    "for h in '## The model' '## Training' '## Quantization' '## Scoring'; do grep -q \"^\$h\" docs/RECIPE.md || { echo \"missing \$h\"; exit 1; }; done"
check "no references to files outside the repository" bash -c \
    "! grep -nE '(SPEC|GPU|ATTENTION|KINDS|STYLE|DESIGN)\.md|shared folder|\bSPEC\b' README.md Makefile *.cu common/* dev/*.cu dev/*.cuh dev/*.sh dev/*.py dev/ref/*.py docs/*.md &&
     ! ./train_gpt --help 2>&1 | grep -E 'SPEC|GPU\.md|ATTENTION|KINDS'"
check "README: no issue letters in the status table" bash -c "! grep -nE '^\| \[[A-Z]\] ' README.md"
check "README: run times on 2 cores and the post-EMA gap explained" bash -c \
    "grep -q '2-core' README.md && grep -qi 'post-EMA' README.md && grep -q '0.997' README.md"

# 9. progress: a step line at least every TRAIN_LOG_SECONDS with elapsed time and ETA, a line per
#    saved state, quantize says it is compressing, the offline data fallback is a notice
check "a step line every TRAIN_LOG_SECONDS even with TRAIN_LOG_EVERY large" bash -c "cd $UD &&
    env $TINY ITERATIONS=40 TRAIN_LOG_EVERY=1000 TRAIN_LOG_SECONDS=0.05 $ROOT/train_gpt --device cpu --save-every 20 \
        --out-dir $UD/prog --run-id prog > $UD/prog.log 2>&1 &&
    grep -qE '^step:(1[1-9]|[23][0-9])/40 train_loss:.* elapsed:[0-9hms]+ eta:[0-9hms]+' $UD/prog.log &&
    [ \$(grep -c '^saved training state: step' $UD/prog.log) = 2 ]"
check "quantize: a line before the (long) compression" bash -c \
    "./quantize --checkpoint $UD/a1/final_model.ckpt --out $UD/q3.ptz --zstd-level 3 | head -3 | grep -q 'compressing with zstd level 3'"
check_fail "make data offline: the fallback is a notice, not an error" 3 "^notice: cannot reach" \
    $PYTHON dev/data/fineweb.py --out $UD/fw --base-url http://127.0.0.1:9 --train-shards 1
check "dev/ref/quant.py keeps the artifact config keys: the P_MODEL options of common/config.h, in order" bash -c \
    "grep -E '^ *X\(.*P_MODEL' common/config.h | grep -oE '^ *X\([A-Z]+, *[a-z_0-9]+, *\"[A-Z_0-9]+\"' | grep -oE '\"[A-Z_0-9]+\"' > $UD/model_keys.txt &&
     [ -s $UD/model_keys.txt ] && diff $UD/model_keys.txt <(grep -A3 '^ARTIFACT_CONFIG_KEYS' dev/ref/quant.py | grep -o '\"[A-Z_]*\"')"
