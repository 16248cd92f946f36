# test_ref.sh: the Python reference (dev/ref/: ckpt format, model, training step, eval) and the
# checkpoint converter (dev/convert_checkpoint.py). Sourced by run_tests.sh; the checks
# themselves are in test/ref_checks.py (one sub-command each). About a minute on 2 cores.
REF_TMP=$TEST_TMP/ref
mkdir -p "$REF_TMP/rt" "$REF_TMP/bad" "$REF_TMP/data"
RC="$PYTHON test/ref_checks.py"

check "ref: ckpt round trip, tiny config (.pt -> .ckpt -> .pt bit-exact)" $RC roundtrip_tiny "$REF_TMP/rt"
check "ref: ckpt round trip, seed shapes; parameter counts of both presets" $RC roundtrip_seed "$REF_TMP/rt"
rm -f "$REF_TMP"/rt/seed*

check "ref: make damaged checkpoints" $RC make_bad "$REF_TMP/bad"
check_fail "ref: ckpt.py rejects a truncated file" 1 "^error: .*bad_truncated.ckpt: truncated" \
    $PYTHON dev/ref/ckpt.py verify "$REF_TMP/bad/bad_truncated.ckpt"
check_fail "ref: ckpt.py rejects a flipped byte (crc)" 1 "^error: .*bad_crc.ckpt: crc mismatch" \
    $PYTHON dev/ref/ckpt.py verify "$REF_TMP/bad/bad_crc.ckpt"
check_fail "ref: ckpt.py rejects a wrong magic" 1 "^error: .*bad_magic.ckpt: bad magic" \
    $PYTHON dev/ref/ckpt.py verify "$REF_TMP/bad/bad_magic.ckpt"
check_fail "ref: pt2ckpt rejects an unknown tensor name" 1 "^error: .*unknown tensor 'blocks.0.attn.extra'" \
    $PYTHON dev/convert_checkpoint.py pt2ckpt "$REF_TMP/bad/bad_unknown.pt" "$REF_TMP/bad/x.ckpt" --ve-layers 2
check "ref: version/trailing/duplicate/dtype/ndim and bad conversions refused" $RC reject_all "$REF_TMP/bad"

check "ref: model forward/backward on CPU (fp32, fp64, grad check, QAT)" $RC model_cpu
check "ref: schedules, Newton-Schulz, sliding windows" $RC schedules
check "ref: training steps reduce the loss; late QAT; EMA" $RC train_cpu
check "ref: shard loader order" $RC loader "$REF_TMP/data"

check "ref: synthetic shards + init checkpoint" $RC make_data "$REF_TMP/data"
check "ref: train.py CLI (2 steps on shards, writes weights + EMA)" \
    $PYTHON dev/ref/train.py --init-ckpt "$REF_TMP/data/init.ckpt" --data-path "$REF_TMP/data" --steps 2 \
        --out "$REF_TMP/data/out.ckpt" --set TRAIN_BATCH_TOKENS=512 --set TRAIN_SEQ_LEN=32 \
        --set MAX_WALLCLOCK_SECONDS=0
REF_TOKENIZER=../shared/data/tokenizers/fineweb_1024_bpe.model
if [ -f "$REF_TOKENIZER" ]; then
    check "ref: eval.py CLI (standard + sliding, EMA weights)" \
        $PYTHON dev/ref/eval.py --ckpt "$REF_TMP/data/out.ema.ckpt" --data-path "$REF_TMP/data" \
            --tokenizer "$REF_TOKENIZER" --seq-len 128 --stride 32 --batch-seqs 4
else
    skip "ref: eval.py CLI" "no shared tokenizer at $REF_TOKENIZER"
fi
