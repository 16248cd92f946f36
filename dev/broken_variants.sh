#!/usr/bin/env bash
# dev/broken_variants.sh: shows that the dev/ GPU checks can fail. Each deliberately wrong
# variant of the shipping code (a -DBREAK_* flag, off in every normal build) is compiled into
# build_break/<FLAG>/ and the check that should catch it is run on it: it must FAIL. The same
# checks from the normal build (build/, `make dev-checks`) must PASS. Prints a table
#   check | variant | result | expected
# and exits 1 when any row is not what it should be. Needs a GPU and nvcc; about 1-2 minutes of
# compilation (in parallel) and ~2 minutes of checks on an H200.
#
#   make -j dev-checks && dev/broken_variants.sh
#
# The variants (grep BREAK_ in common/ to see each one):
#   BREAK_MUON_WD         Muon ignores MUON_WD                 (common/optim.cuh)   -> dev_optim
#   BREAK_NTK_ROPE        GPU RoPE tables keep the plain base past T = 1024
#                                                              (common/layers.cuh)  -> dev_model
#   BREAK_SCALAR_GRAD     scalar gradients (bigram/VE scales) 5% too large
#                                                              (common/layers.cuh)  -> dev_model
#   BREAK_CE_ROUND        the loss ignores round_bf16          (common/loss.cuh)    -> dev_loss
#   BREAK_XSA_ACCUMULATE  xsa_backward overwrites when asked to accumulate
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_RMSNORM_FROM_OUT  rmsnorm_backward_from_out reads the output as if it were the input
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_RELU2_FROM_OUT  relu2_backward_from_out reads relu^2 as if it were relu (no sqrt)
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_RMSNORM_MIX     rmsnorm_resid_mix_backward drops the residual path's gradient
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_QK_RECOMPUTE    the q/k forward rotates the unrounded xn: the backward's recompute of q, k
#                         from the stored xn no longer gives what attention read
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_QK3_FWD         the token-row q/k forward (v3) gives every vector its k = 0 head's gain
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_QK3_BWD         the token-row q/k backward (v3) leaves each block's last warp out of the
#                         gain gradient                        (common/layers.cuh)  -> dev_layers
#   BREAK_FOLD_GRAD       the attn/mlp scale's gradient folded into the proj (fold_scale_grad) skips
#                         every other column of the weight     (common/layers.cuh)  -> dev_layers
#   BREAK_QK3_ACC         the q/k backward from attention's fp32 dQ accumulator leaves its scale out
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_QK3_FAST        the token-row q/k backward's second form (QK3_BWD=2) takes 1/hd one ulp too
#                         large: within the CPU tolerance, not form 1's bits
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_QK_FROM_OUT     the q/k backward from out takes out for xn without undoing RoPE
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_RMB_SKIP        rmsnorm_resid_mix_backward's skip gradient takes mix[0] for the skip weight
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_RMB_RECOMPUTE   rmsnorm_resid_mix_backward's version 2 rebuilds ln from x_in before its
#                         rounding to bf16: no longer the forward's ln, bit for bit
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_BLOCK_START     block_start_forward weighs x0 with mix[0] instead of mix[1]
#                                                              (common/layers.cuh)  -> dev_layers
#   BREAK_ATTN_PRE        the attention backward's preprocess v2 leaves each row's last 8 elements
#                         out of D                             (common/attention.cuh) -> dev_attention
#   BREAK_XSA_D           xsa_backward's D for the attention backward sums dout * y instead of dy * y
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_PRE3            the attention backward's preprocess v3 gives each t the D of the next t
#                         in its run of 8 (lane j keeps row j + 1's sum)
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_XSA2            xsa_backward v2 writes head h's D at head h + 1
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_SCORED_ROWS     the scored-rows-only eval gathers the rows one position too early
#                                                              (common/model_gpu.cuh) -> dev_model
#   BREAK_QGAIN_HEAD      head h's q_gain gradient lands on head h + 1
#                                                              (common/model_gpu.cuh) -> dev_model
#   BREAK_WGMMA_FWD       the Hopper forwards (v2..v9) leave the diagonal tiles unmasked
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_WGMMA_BWD       the sm90 (wgmma) backward drops the causal mask
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_DQ_RACE         the sm90 (wgmma, stage 1) backward loses a dQ partial now and then
#                         (a race's symptom)                   (common/attention.cuh) -> dev_attention
#   BREAK_KNORM           the k norm in the sm90 backward's epilogue takes k for xn without undoing RoPE
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_DQ_ZERO         the sm90 backward's stages 11..15, asked to zero the next call's dQ
#                         accumulator, leave the last CTA's share out
#                                                              (common/attention.cuh) -> dev_attention
#   BREAK_RELU2_GEMM      the fused relu^2 GEMMs (matmul_relu2_forward / _backward_dx / _dx_wt)
#                         keep only the last k-block's products (K > 64): the mainloop every
#                         variant shares; the row wants the default backward variant with K-major
#                         B (_dx_wt, "v6 wt") to fail, the forward's fail first
#                                                              (common/matmul.cuh)  -> dev_matmul
#   BREAK_GROUPED_K       the grouped input-gradient GEMM (matmul_backward_dinp_grouped) reads
#                         the first group's weight for every group's k-blocks
#                                                              (common/matmul.cuh)  -> dev_matmul
#   BREAK_HSTASH          the stashed relu^2 backward (variant 5) takes the current tile's place for
#                         the previous tile's epilogue chunks (stores land one tile late)
#                                                              (common/matmul.cuh)  -> dev_matmul
#   BREAK_RSQ_REDO        the rsqrt relu^2 backward (variant 6) does not redo a pass that met a
#                         denormal h (they come out infinite): what the checks' tiny h are for
#                                                              (common/matmul.cuh)  -> dev_matmul
#   BREAK_RSQ_FLAG        two_sqrt_rsq gives a denormal h a finite (wrong) factor instead of
#                         flagging it                          (common/matmul.cuh)  -> dev_matmul
#   BREAK_QK_EPI          the fused q/k epilogue (matmul_forward_qkv_norm) gives each pass's second
#                         head the first one's gain             (common/matmul.cuh)  -> dev_matmul
#   BREAK_HSIDE           the side-warp relu^2 backward (variant 8) leaves a half's last 4 rows
#                         as the raw product                    (common/matmul.cuh)  -> dev_matmul
#   BREAK_QK_PINGPONG     the ping-pong q, k, v GEMM (QKV_FWD=1) leaves k-block 0 out of each
#                         tile's second 64 rows                 (common/matmul.cuh)  -> dev_matmul
#   BREAK_PP_H            the ping-pong relu^2 backward (variant 9) reads h of the n-block's
#                         first 64 columns for both boxes       (common/matmul.cuh)  -> dev_matmul
#   BREAK_PP_RELU2        the ping-pong relu^2 forward (RELU2_FWD=1, the default) squares
#                         without the relu                      (common/matmul.cuh)  -> dev_matmul
#   BREAK_Q_FROM          the Hopper forwards count their query tiles back from the grid's size,
#                         so a q_from call computes the first tiles instead of the last
#                                                              (common/attention.cuh) -> dev_attention
#                         (the last fifteen need an H100/H200: elsewhere the Hopper variants are
#                         skipped and these rows read UNEXPECTED)
# Logs: build_break/<FLAG>/<check>.log and build_break/real_<check>.log; each check's
# "observed: <check> <err>" lines are collected in build_break/observed.txt.
set -u
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
GPU_ARCH=${GPU_ARCH:-90a}
OUT=build_break
mkdir -p $OUT

# one row per variant: FLAG | dev check | its arguments | the line that must say FAIL (so a
# crash or an unrelated failure does not count as caught)
ROWS=(
    'BREAK_MUON_WD|optim|--no-bench|FAIL +Muon weight decay'
    'BREAK_NTK_ROPE|model|--no-bench|FAIL +rope (cos|sin) T=(1100|2048)'
    'BREAK_SCALAR_GRAD|model|--no-bench|FAIL +(bigram|ve_shared).scale \(same inputs\)'
    'BREAK_CE_ROUND|loss|--no-bench|FAIL +(losses|dlogits)'
    'BREAK_XSA_ACCUMULATE|attention|--check-only --small|FAIL +xsa bwd d[yv] \(accumulate\)'
    'BREAK_RMSNORM_FROM_OUT|layers|--no-bench|FAIL +dinp from y'
    'BREAK_RELU2_FROM_OUT|layers|--no-bench|FAIL +dinp from relu\^2'
    'BREAK_RMSNORM_MIX|layers|--no-bench|FAIL +dresid'
    'BREAK_QK_RECOMPUTE|layers|--no-bench|FAIL +out from xn +bitwise'
    'BREAK_QK3_FWD|layers|--no-bench|FAIL v3 out +bitwise'
    'BREAK_QK3_BWD|layers|--no-bench|FAIL +dgain'
    'BREAK_FOLD_GRAD|layers|--no-bench|FAIL +dscale \(accumulate\)'
    'BREAK_QK3_ACC|layers|--no-bench|FAIL +from acc dinp +bitwise'
    'BREAK_QK3_FAST|layers|--no-bench|FAIL +v3 form 2 dinp'
    'BREAK_QK_FROM_OUT|layers|--no-bench|FAIL +dinp from out'
    'BREAK_RMB_SKIP|layers|--no-bench|FAIL +skip d(enc|res)'
    'BREAK_RMB_RECOMPUTE|layers|--no-bench|FAIL +v2 = v1 (skip )?d(resid|res|x0)'
    'BREAK_BLOCK_START|layers|--no-bench|FAIL +block start (x_in|ln)'
    'BREAK_ATTN_PRE|attention|--check-only --small|FAIL preprocess v2'
    'BREAK_XSA_D|attention|--check-only --small|FAIL +xsa bwd D = preprocess D'
    'BREAK_PRE3|attention|--check-only --small|FAIL preprocess v3'
    'BREAK_XSA2|attention|--check-only --small|FAIL +xsa bwd v2 = v1 \(dy dv D\)'
    'BREAK_SCORED_ROWS|model|--no-bench|FAIL gpu score_from='
    'BREAK_QGAIN_HEAD|model|--no-bench|FAIL grad blocks\.[0-9]+\.attn\.q_gain'
    'BREAK_WGMMA_FWD|attention|--check-only --small --fwd-only|FAIL +v[2-9] fwd (out|lse)'
    'BREAK_WGMMA_BWD|attention|--check-only --small|FAIL +v0/wgmma bwd d[qkv]'
    'BREAK_DQ_RACE|attention|--check-only --small|FAIL +v0/wgmma bwd dq run-to-run spread'
    'BREAK_DQ_ZERO|attention|--check-only --small|FAIL +v0/wgmma-s1[1-5] chain .*other acc zero'
    'BREAK_KNORM|attention|--check-only --small|FAIL +v0/wgmma-s1[1-5] chain knorm dk'
    'BREAK_RELU2_GEMM|matmul|--no-bench|FAIL +relu2 bwd dx fused v6 wt'
    'BREAK_GROUPED_K|matmul|--no-bench|FAIL +grouped dinp M=98381'
    'BREAK_HSTASH|matmul|--no-bench|FAIL +relu2 bwd dx fused v5'
    'BREAK_RSQ_REDO|matmul|--no-bench|FAIL +relu2 bwd dx fused v6'
    'BREAK_RSQ_FLAG|matmul|--no-bench|FAIL relu2 two_sqrt_rsq'
    'BREAK_QK_EPI|matmul|--no-bench|FAIL +qkv norm .* q out'
    'BREAK_HSIDE|matmul|--no-bench|FAIL +relu2 bwd dx fused v8'
    'BREAK_QK_PINGPONG|matmul|--no-bench|FAIL +qkv norm v1 '
    'BREAK_PP_H|matmul|--no-bench|FAIL +relu2 bwd dx fused v9 wt'
    'BREAK_PP_RELU2|matmul|--no-bench|FAIL +relu2 fwd fused v1'
    'BREAK_Q_FROM|attention|--check-only --small --fwd-only|FAIL +v[2-8] fwd q_from='
)
declare -A CHECK ARGS WANT
VARIANTS=()
for r in "${ROWS[@]}"; do
    IFS='|' read -r v c a w <<< "${r%%|FAIL*}|"
    VARIANTS+=("$v"); CHECK[$v]=$c; ARGS[$v]=$a; WANT[$v]="FAIL${r#*|FAIL}"
done

# the normal builds must exist (make dev-checks); the broken ones are compiled here, in parallel
for name in optim model loss attention layers matmul; do
    [ -x build/dev_$name ] || { echo "error: build/dev_$name missing: run 'make -j dev-checks' first" >&2; exit 2; }
done
[ -x "$NVCC" ] || { echo "error: nvcc not found (set NVCC)" >&2; exit 2; }
ZSTD=$(echo '#include <zstd.h>' | g++ -E -x c++ - >/dev/null 2>&1 && echo "-DUSE_ZSTD -lzstd")
echo "compiling ${#VARIANTS[@]} broken variants with $NVCC (sm_$GPU_ARCH) ..."
pids=()
for v in "${VARIANTS[@]}"; do
    name=${CHECK[$v]}
    mkdir -p $OUT/$v
    $NVCC -x cu -O3 -std=c++17 -gencode arch=compute_$GPU_ARCH,code=sm_$GPU_ARCH -Xcompiler -fopenmp -D$v \
        dev/$name.cu -o $OUT/$v/dev_$name $ZSTD -lcublasLt -lcublas -lgomp > $OUT/$v/build.log 2>&1 &
    pids+=($!)
done
build_failed=0
for i in "${!pids[@]}"; do
    wait ${pids[$i]} || { echo "error: building ${VARIANTS[$i]} failed: $OUT/${VARIANTS[$i]}/build.log" >&2; build_failed=1; }
done
[ $build_failed = 0 ] || exit 2

BAD=0
: > $OUT/observed.txt
rows=()
run_row() { # check-name variant binary args expected(PASS|FAIL) log [pattern a FAIL must show]
    local name=$1 variant=$2 bin=$3 args=$4 want=$5 log=$6 pat=${7:-} got
    local t0=$SECONDS
    timeout 300 $bin $args > $log 2>&1 && got=PASS || got=FAIL
    # a broken variant counts as caught only when its targeted check is among the failures
    if [ $got = FAIL ] && [ -n "$pat" ] && ! grep -qE -- "$pat" $log; then got="FAIL(other)"; fi
    grep '^observed:' $log | sed "s/^/[$variant] /" >> $OUT/observed.txt
    local mark=ok
    [ $got = $want ] || { mark="UNEXPECTED"; BAD=1; }
    rows+=("$(printf '%-14s | %-22s | %-11s | expected %-4s %-10s %3ds  %s' dev_$name "$variant" $got $want $mark $((SECONDS - t0)) "$log")")
    echo "${rows[-1]}"
}
echo
printf '%-14s | %-22s | %-11s | %s\n' check variant result expected
for name in optim model loss attention layers matmul; do
    args="--no-bench"; [ $name = attention ] && args="--check-only"
    run_row $name real build/dev_$name "$args" PASS $OUT/real_$name.log
done
for v in "${VARIANTS[@]}"; do
    name=${CHECK[$v]}
    run_row $name $v $OUT/$v/dev_$name "${ARGS[$v]}" FAIL $OUT/$v/$name.log "${WANT[$v]}"
    # which lines failed (the evidence that the targeted check is what caught it)
    grep -E 'FAIL' $OUT/$v/$name.log | head -4 | sed 's/^/      /'
done
echo
echo "observed errors (real build first; tolerances are set at ~5-10x these): $OUT/observed.txt"
grep '^\[real\]' $OUT/observed.txt | head -80
echo
[ $BAD = 0 ] && echo "broken_variants: every broken variant FAILED its check and the real code PASSED" ||
    echo "broken_variants: UNEXPECTED results above"
exit $BAD
