# test_model.sh: common/model_cpu.h, the CPU reference of the model (forward and backward).
#   build/gradcheck: finite differences of every parameter tensor in double (T = 1032 so the
#     NTK RoPE branch runs, and a short batch), QAT's straight-through gradient, float vs
#     double, the init rules. Prints its tables; exit status 1 on any failure.
#   build/model_tool vs test/model_torch_ref.py: the BigramHash buckets (int32 wraparound, floor
#     modulo) and the RoPE tables (float32 inv_freq bit for bit) against torch itself.
#   build/model_tool sliding: the sliding eval with scored rows only (NllFn's score_from) gives
#     the full forward's losses and BPB bit for bit.
TOOL=$ROOT/build/model_tool
TREF="$PYTHON $ROOT/test/model_torch_ref.py"

check "model: build gradcheck and model_tool" make -s build/gradcheck build/model_tool
check "model: gradcheck (finite differences, QAT, float vs double, init)" "$ROOT/build/gradcheck"

# same_hash BUCKETS B T IDS...: model_tool and model_torch_ref.py print the same (non-empty) line
same_hash() {
    local a b
    a=$("$TOOL" hash "$@") || return 1
    b=$($TREF hash "$@") || return 1
    [ -n "$a" ] && [ "$a" = "$b" ] || { echo "model_tool: $a"; echo "torch:      $b"; return 1; }
}
# ids around the int32 overflow of 36313*id (id >= 59139 wraps negative), 0, the uint16 max;
# two sequences: each starts again at bucket BUCKETS-1
EDGE="0 1 59138 59139 60000 65535 65535 0 1023 2 59139 65534"
check "model: bigram hash = torch (int32 wraparound, floor mod), 10240 buckets" same_hash 10240 2 6 $EDGE
check "model: bigram hash = torch, 2048 buckets" same_hash 2048 3 4 $EDGE
RANDOM_IDS=$($PYTHON -c "import random; random.seed(5); print(' '.join(str(random.randrange(65536)) for _ in range(400)))")
check "model: bigram hash = torch on 400 random uint16 ids" same_hash 10240 4 100 $RANDOM_IDS

rope_matches() { # T RD BASE
    "$TOOL" rope "$@" > $TEST_TMP/rope.txt && $TREF rope "$@" $TEST_TMP/rope.txt
}
check "model: RoPE tables = torch, T=2048 (NTK base), 16 of 64 dims" rope_matches 2048 16 10000
check "model: RoPE tables = torch, T=1024 (plain base)" rope_matches 1024 16 10000
check "model: RoPE tables = torch, T=1032, 4 dims (the gradcheck config)" rope_matches 1032 4 10000

# the sliding eval asks the model for its windows' scored suffix only: the same BPB to the last
# bit as computing every row (seq 64, stride 16: batches mixing the first window, full windows
# and the short tail windows of 300 tokens; with and without the reference's bf16 logits)
check "model: sliding eval, scored rows only = full forward bit for bit (tail windows)" "$TOOL" sliding 64 16 300 3 0
check "model: the same with EVAL_REF_ROUNDING=1 (bf16 logits)" "$TOOL" sliding 64 16 300 3 1
check "model: the same, one window per batch and stride 1 of 40" "$TOOL" sliding 40 1 90 1 0
