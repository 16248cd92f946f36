# test_config.sh: the option table, presets, precedence, --dry-run and impossible settings.
T=./train_gpt
check "dry-run seed prints 27878489"           bash -c "$T --dry-run | grep -qx 'model_params:27878489'"
check "dry-run record prints 26993756"         bash -c "$T --preset record --dry-run | grep -qx 'model_params:26993756'"
check "dry-run prints the boxed table"         bash -c "$T --dry-run | grep -qE '^\| NUM_LAYERS +\| 11 +\| default \|'"
check "dry-run touches no data"                bash -c "cd $TEST_TMP && DATA_PATH=/nonexistent $ROOT/train_gpt --dry-run >/dev/null"
check "--help lists env names and flags"       bash -c "$T --help | grep -q -- '--num-layers V *NUM_LAYERS'"
# --version: the commit the Makefile stamped (git describe; "unknown" outside a git checkout)
for prog in train_gpt eval quantize; do
    check "$prog --version names its build's commit" bash -c "./$prog --version | grep -qxE '$prog ([0-9a-f]{7,}(-dirty)?|unknown)'"
done
check "env overrides preset"                   bash -c "BIGRAM_VOCAB_SIZE=4096 $T --preset record --dry-run | grep -qE '^\| BIGRAM_VOCAB_SIZE +\| 4096 +\| env'"
check "flag overrides env"                     bash -c "NUM_LAYERS=9 $T --num-layers 7 --dry-run | grep -qE '^\| NUM_LAYERS +\| 7 +\| flag'"
check "--flag=value form"                      bash -c "$T --model-dim=256 --dry-run | grep -qE '^\| MODEL_DIM +\| 256 '"
check "PRESET env var"                         bash -c "PRESET=record $T --dry-run | grep -qx 'model_params:26993756'"
check "param count follows the config"         bash -c "$T --num-layers 2 --model-dim 64 --num-heads 4 --num-kv-heads 2 --vocab-size 128 --bigram-vocab-size 64 --bigram-dim 16 --dry-run | grep -qx 'model_params:$((128*64 + 64*16 + 64*16 + 1 + 64 + 64 + 2*(64+64+128+4+64*64+32*64*2+64*64+192*64*2)))'"
check_fail "heads not dividing width"          2 "NUM_HEADS=7 does not divide MODEL_DIM=512"        $T --num-heads 7 --dry-run
check_fail "kv heads not dividing heads"       2 "NUM_KV_HEADS=3 does not divide NUM_HEADS=8"       $T --num-kv-heads 3 --dry-run
check_fail "odd head dim"                      2 "head dim .* is odd"                               $T --model-dim 72 --num-heads 8 --dry-run
check_fail "zero layers"                       2 "NUM_LAYERS=0: must be positive"                   env NUM_LAYERS=0 $T --dry-run
check_fail "non-numeric value"                 2 "MODEL_DIM=abc \(env\): not an integer"             env MODEL_DIM=abc $T --dry-run
check_fail "non-numeric float"                 2 "MATRIX_LR=0.02x \(flag\): not a finite number"     $T --matrix-lr 0.02x --dry-run
check_fail "VE layer out of range"             2 "VE_LAYERS=9,11: layer 11 out of range"            $T --preset record --ve-layers 9,11 --dry-run
check_fail "VE layers not numbers"             2 "VE_LAYERS=a: expected comma-separated"            $T --preset record --ve-layers a --dry-run
check_fail "unknown flag"                      2 "unknown option --num-layer "                      $T --num-layer 3 --dry-run
check_fail "unknown preset"                    2 "unknown preset"                                   $T --preset fast --dry-run
check_fail "batch not splitting into seqs"     2 "TRAIN_BATCH_TOKENS=1000 must split"               $T --train-batch-tokens 1000 --dry-run
check_fail "bad device"                        2 "DEVICE=tpu: must be auto, cuda or cpu"            $T --device tpu --dry-run
check_fail "no data: clear message"            1 "no data directory at DATA_PATH=.*HINT: .make data"  bash -c "cd $TEST_TMP && $ROOT/train_gpt --device cpu"
check_fail "bigram width equal to the model width" 2 "BIGRAM_DIM=128 equals MODEL_DIM.*HINT" $T --model-dim 128 --dry-run
