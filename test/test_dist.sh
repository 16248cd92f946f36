# test_dist.sh: several ranks on a machine without a GPU (common/dist.h).
#   1. the built-in launcher and the rendezvous for world sizes 1, 2, 4, 8; torchrun-style and
#      Slurm-style environments: every rank agrees on the world, knows its rank, and reads the
#      micro-batches the reference's loader arithmetic gives it (test/loader_ref.py);
#   2. failures: a rank killed with kill -9 (under the launcher and without it), Ctrl-C to the
#      launcher, rank 0 unreachable, ranks missing, inconsistent world sizes, bad counts: a clear
#      error and an exit within seconds, no process left behind;
#   3. CPU data parallelism: 2 and 4 ranks train like 1 (same losses within float summation
#      noise, ranks bit-identical to each other), a 2-rank state resumes on 1 rank, and the
#      sharded evals equal the 1-rank evals.
DD=$TEST_TMP/dist
mkdir -p $DD
TG=$ROOT/train_gpt
REF="$PYTHON $ROOT/test/loader_ref.py"
$REF gen $DD/data --vocab 64 --seed 5 --train 3000,2500 --val 2000 >/dev/null
# 3 steps of a 256-token global batch, 16-token sequences (each rank's slice of every micro-step)
SELF="env VOCAB_SIZE=64 TRAIN_SEQ_LEN=16 TRAIN_BATCH_TOKENS=256 ITERATIONS=3 DATA_PATH=$DD/data TRAIN_ONLY=1 $TG --device cpu --dist-selftest"
free_port() { $PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# check_ranks DIR WORLD LOCAL_WORLD: every rank's file names it, with one token from rank 0, and
# its batches equal the reference loader's for (WORLD, rank)
check_ranks() {
    local d=$1 w=$2 lw=$3 tokens=""
    for ((r = 0; r < w; r++)); do
        local f=$d/dist_rank$r.txt
        [ -f $f ] || { echo "no $f"; return 1; }
        read -r _ rr _ ww _ lr _ lww _ tok _ <<<"$(head -1 $f)"
        [ "$rr" = $r ] && [ "$ww" = $w ] && [ "$lr" = $((r % lw)) ] && [ "$lww" = $lw ] || { echo "rank $r: $(head -1 $f)"; return 1; }
        tokens="$tokens $tok"
        $REF train $DD/data 64 $w $r 256 $((8 / w)) $((3 * 8 / w)) > $d/ref$r.txt || return 1
        tail -n +2 $f | cmp - $d/ref$r.txt || { echo "rank $r: batches differ from the reference loader"; return 1; }
    done
    [ $(tr ' ' '\n' <<<"$tokens" | sort -u | grep -c .) = 1 ] || { echo "ranks got different tokens from rank 0:$tokens"; return 1; }
}
launcher_run() { # WORLD: the built-in launcher with --nproc WORLD
    local d=$DD/launch$1
    mkdir -p $d && $SELF --nproc $1 --out-dir $d > $d/log 2>&1 || { cat $d/log; return 1; }
    grep -q "dist_selftest: $1 ranks ok" $d/log || { cat $d/log; return 1; }
    check_ranks $d $1 $1
}
for w in 1 2 4 8; do
    check "dist: launcher, $w ranks agree (world, rank, rank 0's token, data slices = reference)" launcher_run $w
done

# ranks started by someone else: torchrun's variables (2 nodes x 2 ranks; the control port is
# MASTER_PORT + 1), Slurm's (SLURM_PROCID/LOCALID/NTASKS/NTASKS_PER_NODE + MASTER_ADDR/PORT)
env_run() { # KIND: start 4 ranks with that kind of environment, all must succeed
    local d=$DD/$1 port=$(free_port) pids=() rc=0
    mkdir -p $d
    for r in 0 1 2 3; do
        if [ $1 = torchrun ]; then
            env RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r % 2)) LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((port - 1)) \
                $SELF --out-dir $d > $d/log$r 2>&1 &
        else
            env SLURM_PROCID=$r SLURM_NTASKS=4 SLURM_LOCALID=$((r % 2)) SLURM_NTASKS_PER_NODE=2 MASTER_ADDR=localhost \
                MASTER_PORT=$((port - 1)) $SELF --out-dir $d > $d/log$r 2>&1 &
        fi
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait $p || rc=1; done
    [ $rc = 0 ] || { cat $d/log*; return 1; }
    check_ranks $d 4 2
}
check "dist: torchrun-style env, 4 ranks on 2 'nodes' (MASTER_PORT + 1)" env_run torchrun
check "dist: Slurm env, 4 ranks on 2 'nodes' (SLURM_PROCID, SLURM_LOCALID)" env_run slurm

# --- failures --------------------------------------------------------------------------------
# wait_exit PID SECONDS: the process ends within SECONDS (returns 1 if it is still there)
wait_exit() { for ((i = 0; i < $2 * 10; i++)); do kill -0 $1 2>/dev/null || return 0; sleep 0.1; done; return 1; }
rank_pid() { sed -n 's/.* pid \([0-9]*\).*/\1/p' $1 2>/dev/null | head -1; }
wait_files() { # DIR N: the first N ranks wrote their files (they are past the rendezvous)
    for ((i = 0; i < 200; i++)); do
        local n=0
        for ((r = 0; r < $2; r++)); do [ -s $1/dist_rank$r.txt ] && n=$((n + 1)); done
        [ $n = $2 ] && return 0
        sleep 0.1
    done
    return 1
}
killed_under_launcher() {
    local d=$DD/kill_launch
    mkdir -p $d
    DIST_SELFTEST_HOLD=120 $SELF --nproc 4 --out-dir $d > $d/log 2>&1 &
    local lp=$!
    wait_files $d 4 || { echo "ranks did not start"; cat $d/log; kill $lp; return 1; }
    local victim=$(rank_pid $d/dist_rank2.txt) others="$(rank_pid $d/dist_rank0.txt) $(rank_pid $d/dist_rank1.txt) $(rank_pid $d/dist_rank3.txt)"
    kill -9 $victim
    wait_exit $lp 15 || { echo "the launcher still runs 15 s after rank 2 was killed"; cat $d/log; kill -9 $lp; return 1; }
    wait $lp; local rc=$?
    cat $d/log
    [ $rc = 137 ] || { echo "launcher exit status $rc (want 137 = killed by signal 9)"; return 1; }
    grep -q "launcher: rank 2 was killed by signal 9" $d/log || return 1
    for p in $others; do kill -0 $p 2>/dev/null && { echo "rank pid $p is still running"; return 1; }; done
    return 0
}
check "dist: kill -9 of rank 2 under the launcher: every rank gone within 15 s, launcher names rank 2, status 137" killed_under_launcher

killed_without_launcher() { # torchrun-style ranks: the survivors notice the closed socket themselves
    local d=$DD/kill_env port=$(free_port) pids=()
    mkdir -p $d
    for r in 0 1 2 3; do
        DIST_SELFTEST_HOLD=120 RANK=$r WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 DIST_PORT=$port \
            $SELF --out-dir $d > $d/log$r 2>&1 &
        pids+=($!)
    done
    wait_files $d 4 || { echo "ranks did not start"; kill ${pids[@]}; return 1; }
    kill -9 ${pids[1]}
    for r in 0 2 3; do
        wait_exit ${pids[$r]} 10 || { echo "rank $r still runs 10 s after rank 1 was killed"; kill -9 ${pids[@]}; return 1; }
        wait ${pids[$r]} && { echo "rank $r exited with status 0"; return 1; }
    done
    cat $d/log0 $d/log2 $d/log3
    grep -q "error: \[rank 0\] lost rank 1 during selftest hold" $d/log0 && grep -q "error: \[rank 2\] lost rank 0" $d/log2
}
check "dist: kill -9 of rank 1 without a launcher: ranks 0, 2, 3 exit within 10 s, naming the lost rank" killed_without_launcher

ctrl_c() {
    local d=$DD/ctrl_c
    mkdir -p $d
    DIST_SELFTEST_HOLD=120 $SELF --nproc 2 --out-dir $d > $d/log 2>&1 &
    local lp=$!
    wait_files $d 2 || { echo "ranks did not start"; kill $lp; return 1; }
    local ranks="$(rank_pid $d/dist_rank0.txt) $(rank_pid $d/dist_rank1.txt)"
    kill -INT $lp
    wait_exit $lp 15 || { echo "the launcher still runs 15 s after SIGINT"; cat $d/log; kill -9 $lp; return 1; }
    wait $lp; local rc=$?
    cat $d/log
    [ $rc = 130 ] || { echo "launcher exit status $rc (want 130)"; return 1; }
    for p in $ranks; do kill -0 $p 2>/dev/null && { echo "rank pid $p is still running"; return 1; }; done
    grep -q "passing it to the 2 running ranks" $d/log
}
check "dist: Ctrl-C (SIGINT) to the launcher stops every rank, status 130" ctrl_c

P=$(free_port)  # nobody listens there
check_fail "dist: rank 0 unreachable: a timeout naming the address" 1 "\[rank 1\] cannot reach rank 0 at 127.0.0.1:$P within 2s" \
    env RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 DIST_PORT=$P DIST_TIMEOUT=2 $SELF --out-dir $DD
check_fail "dist: unknown MASTER_ADDR: a timeout naming the address and the resolver's error" 1 \
    "cannot reach rank 0 at no-such-host.invalid:$P within 2s \(cannot resolve MASTER_ADDR" \
    env RANK=1 WORLD_SIZE=2 MASTER_ADDR=no-such-host.invalid DIST_PORT=$P DIST_TIMEOUT=2 $SELF --out-dir $DD
# an address that never answers (TEST-NET-1, RFC 5737): the connect must not outlast DIST_TIMEOUT
check_fail "dist: MASTER_ADDR that never answers: a timeout within DIST_TIMEOUT" 1 "cannot reach rank 0 at 192.0.2.1:$P within 2s" \
    timeout 20 env RANK=1 WORLD_SIZE=2 MASTER_ADDR=192.0.2.1 DIST_PORT=$P DIST_TIMEOUT=2 $SELF --out-dir $DD
check_fail "dist: rank 0 alone: names the missing ranks" 1 "only 1 of 4 ranks connected to port $P within 2s \(missing ranks: 1,2,3\)" \
    env RANK=0 WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 DIST_PORT=$P DIST_TIMEOUT=2 $SELF --out-dir $DD
mismatch() {
    local port=$(free_port)
    env RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 DIST_PORT=$port DIST_TIMEOUT=5 $SELF --out-dir $DD > $DD/mm0 2>&1 &
    local p0=$!
    env RANK=1 WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 DIST_PORT=$port DIST_TIMEOUT=5 $SELF --out-dir $DD > $DD/mm1 2>&1
    wait $p0; local rc=$?
    cat $DD/mm0 $DD/mm1
    [ $rc = 1 ] && grep -q "rank 1 says the world size is 4, rank 0 has 2" $DD/mm0
}
check "dist: ranks disagreeing on WORLD_SIZE are refused by rank 0" mismatch
check_fail "dist: --nproc 3 is refused (must divide 8)" 2 "3 ranks \(NPROC\) do not divide 8" $SELF --nproc 3
check_fail "dist: WORLD_SIZE 6 is refused" 2 "WORLD_SIZE=6 must divide 8" env RANK=0 WORLD_SIZE=6 MASTER_ADDR=x MASTER_PORT=1 $SELF
check_fail "dist: WORLD_SIZE > 1 without MASTER_ADDR is refused" 2 "needs MASTER_ADDR and MASTER_PORT" env RANK=0 WORLD_SIZE=2 $SELF
check_fail "dist: RANK outside WORLD_SIZE is refused" 2 "rank 2 is outside a world of 2" env RANK=2 WORLD_SIZE=2 MASTER_ADDR=x MASTER_PORT=1 $SELF

# --- CPU data parallelism --------------------------------------------------------------------
# A tiny model, 8 steps of 16 sequences of 64 (QAT switches on midway, warmup steps undone):
# 1, 2 and 4 ranks must give the same losses and weights up to float summation order (the
# gradient is averaged over ranks instead of summed in one loop). Measured on this model: printed
# losses identical (4 decimals), weights/EMA/optimizer state within 2.6e-5 relative (2 and 4
# ranks); tolerances 2e-4 for both. CHECK_SYNC_EVERY=2: the ranks hold bit-identical states.
DP="env VOCAB_SIZE=64 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 BIGRAM_VOCAB_SIZE=96 BIGRAM_DIM=16
    XSA_LAST_N=1 VE_ENABLED=0 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=1024 ITERATIONS=8 WARMDOWN_ITERS=4 MAX_WALLCLOCK_SECONDS=0
    LATE_QAT_THRESHOLD=0.6 WARMUP_STEPS=2 TRAIN_LOG_EVERY=1 VAL_LOSS_EVERY=0 TRAIN_ONLY=1 ZSTD_LEVEL=1 SAVE_EVERY=8
    DATA_PATH=$DD/dpdata $TG --device cpu"
DP=$(echo $DP)
CMP="$PYTHON $ROOT/test/dist_compare.py"
$REF gen $DD/dpdata --vocab 64 --seed 5 --train 30000,25000 --val 3000 >/dev/null
dp_run() { # NAME NPROC ARGS...: a run in $DD/NAME, log in $DD/NAME.log
    local name=$1 n=$2
    shift 2
    (cd $DD && $DP --nproc $n --out-dir $DD/$name --run-id $name "$@" > $DD/$name.log 2>&1) || { tail -5 $DD/$name.log; return 1; }
}
check "dist: CPU training, 1 rank" dp_run dp1 1
for n in 2 4; do
    check "dist: CPU training, $n ranks, ranks bit-identical every 2 steps" bash -c \
        "$(declare -f dp_run); DD=$DD DP='$DP'; dp_run dp$n $n --check-sync-every 2 && [ \$(grep -c 'check_sync: step:[0-9]* $n ranks bit-identical' $DD/dp$n.log) = 4 ]"
    check "dist: $n ranks train like 1: losses within 2e-4" $CMP losses $DD/dp$n.log $DD/dp1.log 2e-4
    check "dist: $n ranks train like 1: weights, EMA, optimizer state within 2e-4" $CMP ckpt $DD/dp$n/train_state.ckpt $DD/dp1/train_state.ckpt 2e-4
done
# A 2-rank state (saved after step 4) resumed on 1 rank continues like the 2-rank run; resumed
# on 2 ranks it continues bit for bit. (The data cursor is global, so any world size can resume.)
check "dist: 2 ranks stop at step 4 and save" dp_run dp2stop 2 --stop-step 4
check "dist: a 2-rank state resumes on 1 rank" dp_run dp2to1 1 --resume $DD/dp2stop/train_state.ckpt
check "dist: ... with the 2-rank run's losses (steps 5-8, within 2e-4)" $CMP losses $DD/dp2to1.log $DD/dp2.log 2e-4 5
check "dist: ... and its final state (within 2e-4)" $CMP ckpt $DD/dp2to1/train_state.ckpt $DD/dp2/train_state.ckpt 2e-4
check "dist: a 2-rank state resumes on 2 ranks" dp_run dp2to2 2 --resume $DD/dp2stop/train_state.ckpt
check "dist: ... bit for bit (losses and final state)" bash -c \
    "$CMP losses $DD/dp2to2.log $DD/dp2.log 0 5 && $CMP ckpt $DD/dp2to2/train_state.ckpt $DD/dp2/train_state.ckpt 0"

# Sharded evals: the same weights (one step at learning rate 0), scored by 1, 2 and 4 ranks, each rank a
# contiguous share of the sequences / windows, the fp64 sums added over ranks. Standard eval at
# seq 64, round trip through the artifact, sliding window stride 16 (tail windows included):
# the _exact lines agree to 1e-9 relative (fp64 summation order only).
if command -v spm_train >/dev/null 2>&1; then
    $PYTHON -c "
import random
random.seed(1)
w = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'dog', 'ran', 'far', 'and', 'big', 'red', 'sun', 'hot', 'day']
open('$DD/tok.txt', 'w').write('\n'.join(' '.join(random.choice(w) for _ in range(12)) for _ in range(2000)))"
    spm_train --input=$DD/tok.txt --model_prefix=$DD/tok --model_type=bpe --vocab_size=64 --minloglevel=2 >/dev/null 2>&1
    for n in 1 2 4; do
        check "dist: evals on $n ranks" dp_run ev$n $n --iterations 1 --matrix-lr 0 --scalar-lr 0 --tied-embed-lr 0 --train-only 0 --tokenizer-path $DD/tok.model \
            --eval-seq-len 64 --eval-stride 16 --eval-batch-seqs 8 --val-batch-size 1024
    done
    for n in 2 4; do
        check "dist: sharded evals on $n ranks = 1 rank (standard, round trip, sliding; 1e-9)" $CMP bpb $DD/ev$n.log $DD/ev1.log 1e-9
    done
else
    skip "dist: sharded evals = 1 rank" "spm_train not installed (apt-get install sentencepiece) for the test tokenizer"
fi
