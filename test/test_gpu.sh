# test_gpu.sh: the dev/ GPU checks (each kernel family against the CPU reference, then its
# benchmark rows). On a machine without a GPU they are built (make all) but skipped here.
GPU_BUILD_DIR=${GPU_BUILD_DIR:-build}
gpu_checks=($GPU_BUILD_DIR/dev_*)
if [ ! -e "${gpu_checks[0]}" ]; then
    skip "gpu checks" "not built: no nvcc"
elif ! nvidia-smi -L >/dev/null 2>&1; then
    for b in "${gpu_checks[@]}"; do skip "gpu: ${b#$GPU_BUILD_DIR/dev_}" "no GPU on this machine"; done
else
    mkdir -p "${GPU_LOG_DIR:-$TEST_TMP}"
    for b in "${gpu_checks[@]}"; do
        check "gpu: ${b#$GPU_BUILD_DIR/dev_}" bash -c "$b > ${GPU_LOG_DIR:-$TEST_TMP}/${b#$GPU_BUILD_DIR/}.log 2>&1; rc=\$?; cat ${GPU_LOG_DIR:-$TEST_TMP}/${b#$GPU_BUILD_DIR/}.log; exit \$rc"
    done
fi
# the GPU trainer end to end: against the CPU trainer (synthetic shards, 20 steps, then a resume)
# and its stop on a NaN
if [ -e "${gpu_checks[0]}" ] && nvidia-smi -L >/dev/null 2>&1; then
    $PYTHON test/loader_ref.py gen $TEST_TMP/gpudata --vocab 1024 --seed 3 --train 100000,100000 --val 5000 >/dev/null
    check "gpu: training, GPU vs CPU 20 steps within 6e-3 + resume (dev/parity_gpu.sh cpu)" \
        env DATA_PATH=$TEST_TMP/gpudata OUT=$TEST_TMP/parity_gpu PYTHON=$PYTHON dev/parity_gpu.sh cpu
    # health: a NaN/Inf gradient norm stops the run before the update, with the state saved
    check_fail "gpu: a NaN/Inf loss or gradient norm stops the run (exit 1) and names the saved state" 1 \
        "training diverged at step [0-9]+: train loss .*, gradient norm .*; the last good state \(after step [0-9]+\) is in .*/gpuhealth/train_state.ckpt" \
        env VOCAB_SIZE=1024 NUM_LAYERS=2 MODEL_DIM=128 NUM_HEADS=2 NUM_KV_HEADS=1 BIGRAM_VOCAB_SIZE=96 BIGRAM_DIM=32 \
            TRAIN_SEQ_LEN=128 TRAIN_BATCH_TOKENS=8192 ITERATIONS=5 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=0 TRAIN_ONLY=1 \
            TIED_EMBED_LR=1e38 MATRIX_LR=1e38 SCALAR_LR=1e38 DATA_PATH=$TEST_TMP/gpudata \
            ./train_gpt --device cuda --run-id gpuhealth --out-dir $TEST_TMP/gpuhealth
else
    skip "gpu: training, GPU vs CPU 20 steps + resume" "no GPU on this machine"
    skip "gpu: a NaN/Inf loss or gradient norm stops the run" "no GPU on this machine"
fi
