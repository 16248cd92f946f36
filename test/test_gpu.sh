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
