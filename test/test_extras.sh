# test_extras.sh: issue [M]: the EMA warmup (schedule, a short CPU run where it helps, resume),
# the seeds statistics and runner, the submission folder (built and run from inside), the prompt
# encoder and `eval --sample`. The runs use a tiny model on the first tokens of the shared FineWeb
# corpus (../shared); without it those checks are skipped (and counted).
XD=$TEST_TMP/extras
mkdir -p "$XD"
SHARED=${SHARED_DATA:-$ROOT/../shared/data}  # (SHARED_DATA=... where shared/ is elsewhere)
SPM=$SHARED/tokenizers/fineweb_1024_bpe.model
make -s train_gpt eval build/ema_tool build/tok_tool build/ckpt_tool >/dev/null

check "ema: schedule min(EMA_DECAY, (1+t)/(10+t)), and off by default" $PYTHON test/ema_check.py build/ema_tool
check "ema: EMA_WARMUP/--ema-warmup in the option table, default 0" bash -c \
    "./train_gpt --dry-run | grep -qE '^\| EMA_WARMUP +\| 0 +\| default' && ./train_gpt --dry-run --ema-warmup 1 | grep -qE '^\| EMA_WARMUP +\| 1 +\| flag'"
check "seeds: Student t and the Welch test against closed forms and scipy's values" $PYTHON test/seeds_check.py stats

# the encoder against the sentencepiece library
if [ -f "$SPM" ]; then
    check "encode: shared tokenizer, as sentencepiece" $PYTHON test/encode_check.py "$SPM" build/tok_tool /usr/share/common-licenses/GPL-3
else
    skip "encode: shared tokenizer" "no $SPM"
fi
if command -v spm_train >/dev/null 2>&1; then
    spm_train --input=/usr/share/common-licenses/GPL-3 --model_prefix="$XD/bf" --model_type=bpe --vocab_size=360 \
        --byte_fallback=true --character_coverage=1.0 --user_defined_symbols='<sep>,☃' --control_symbols='<ctl>' --minloglevel=2
    $PYTHON test/tokenizer_check.py mutate "$XD/bf.model" "$XD/unused.model"
    check "encode: byte fallback + user-defined pieces, as sentencepiece" $PYTHON test/encode_check.py "$XD/bf.model" build/tok_tool /usr/share/common-licenses/GPL-2
    check "encode: with unused pieces, as sentencepiece" $PYTHON test/encode_check.py "$XD/unused.model" build/tok_tool /usr/share/common-licenses/GPL-2
    for flags in "--remove_extra_whitespaces=false" "--remove_extra_whitespaces=false --add_dummy_prefix=false"; do
        spm_train --input=/usr/share/common-licenses/GPL-3 --model_prefix="$XD/ws" --model_type=bpe --vocab_size=360 \
            --byte_fallback=true --character_coverage=1.0 --minloglevel=2 $flags
        check "encode: $flags, as sentencepiece" $PYTHON test/encode_check.py "$XD/ws.model" build/tok_tool /usr/share/common-licenses/GPL-2
    done
else
    skip "encode: trained tokenizers" "spm_train not installed"
fi

CORPUS=$(ls "$SHARED"/corpus_sp1024/fineweb_train_*.bin.xz 2>/dev/null | head -1)
if [ -z "$CORPUS" ] || [ ! -f "$SPM" ]; then
    skip "extras: tiny CPU runs (EMA warmup, seeds, submission, sample)" "no shared corpus at $SHARED"
else
$PYTHON test/extras_data.py "$CORPUS" "$XD" 200000 20000
# 30 steps of a 2-layer model; one OpenMP thread (the machine may be shared: spinning threads crawl)
TINY="OMP_NUM_THREADS=1 DEVICE=cpu NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=2 NUM_KV_HEADS=1 BIGRAM_DIM=32 BIGRAM_VOCAB_SIZE=512
      TRAIN_SEQ_LEN=128 EVAL_SEQ_LEN=128 TRAIN_BATCH_TOKENS=2048 ITERATIONS=30 WARMDOWN_ITERS=10 WARMUP_STEPS=2
      MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 VAL_MAX_TOKENS=8192 EVAL_STRIDE=64 DATA_PATH=$XD TOKENIZER_PATH=$SPM"
TINY=$(echo $TINY)  # one line: it goes inside bash -c strings
check "seeds: dev/seeds.py run, 2 seeds with EMA_WARMUP=1" bash -c "cd $XD && env $TINY EMA_WARMUP=1 \
    $PYTHON $ROOT/dev/seeds.py run --seeds 1337,7 --prefix warm -- $ROOT/train_gpt > run.out 2>&1 &&
    grep -q '^verdict' run.out || grep -q '^n=2  val_bpb mean' run.out"
check "ema: the same run without EMA_WARMUP" bash -c "cd $XD && env $TINY SEED=1337 $ROOT/train_gpt --run-id plain --out-dir plain > plain.out 2>&1"
check "ema: post-EMA val_loss with the warmup is lower than without (30 steps)" bash -c \
    "a=\$(grep '^final_float_fixed_exact' $XD/logs/warm_seed1337.txt | sed 's/.*val_loss:\([0-9.]*\).*/\1/');
     b=\$(grep '^final_float_fixed_exact' $XD/logs/plain.txt | sed 's/.*val_loss:\([0-9.]*\).*/\1/');
     echo \"with \$a without \$b\"; awk -v a=\$a -v b=\$b 'BEGIN { exit !(a < b - 0.05) }'"
check "seeds: the log parser reads a real log" $PYTHON test/seeds_check.py log "$XD/logs/warm_seed1337.txt"
check "seeds: report against baseline logs prints the test and a verdict" bash -c \
    "$PYTHON dev/seeds.py report $XD/logs/warm_seed1337.txt $XD/logs/warm_seed7.txt --baseline-logs $XD/logs/plain.txt > $XD/report.out &&
     grep -qE '^improvement [-+][0-9.]+ nats \(needed > 0.005 nats\)  t=' $XD/report.out && grep -qE '^verdict: (PASS|FAIL) \(p' $XD/report.out"
grep -v '^final_int6' "$XD/logs/plain.txt" > "$XD/cut.txt"
check_fail "seeds: a log of an unfinished run is refused" 1 "cut.txt: no final_int6_roundtrip_exact" $PYTHON dev/seeds.py report "$XD/cut.txt"

# resume with the warmup on: the decay is a function of the step, so a resumed run is bit-identical
RES="env $TINY EMA_WARMUP=1 ITERATIONS=12 TRAIN_ONLY=1"
check "ema: resume with EMA_WARMUP=1 is bit-identical (weights and EMA)" bash -c "cd $XD &&
    $RES $ROOT/train_gpt --run-id r_full --out-dir rfull --save-every 12 > /dev/null 2>&1 &&
    $RES $ROOT/train_gpt --run-id r_a --out-dir rpart --save-every 6 --stop-step 6 > /dev/null 2>&1 &&
    $RES $ROOT/train_gpt --run-id r_b --out-dir rpart --save-every 12 --resume rpart/train_state.ckpt > /dev/null 2>&1 &&
    diff <($ROOT/build/ckpt_tool dump rfull/final_model.ckpt) <($ROOT/build/ckpt_tool dump rpart/final_model.ckpt) &&
    diff <($ROOT/build/ckpt_tool dump rfull/train_state.ckpt | grep -v STATE_) <($ROOT/build/ckpt_tool dump rpart/train_state.ckpt | grep -v STATE_) &&
    [ \$($ROOT/build/ckpt_tool dump rfull/train_state.ckpt | grep -c '^ema/') -gt 20 ]"

# the submission folder: written, sized, refused when over the limit, and it builds and runs inside
check "submission: make submission writes the folder" bash -c "make -s submission NAME=tiny AUTHOR='Test Author' GITHUB=tester \
    OUT=$XD/sub LOGS='$XD/logs/warm_seed1337.txt $XD/logs/warm_seed7.txt' > $XD/sub.out 2>&1 &&
    grep -qE '^artifact [0-9,]+ bytes .* = [0-9,]+ bytes; limit 16,000,000: fits' $XD/sub.out &&
    cd $XD/sub && ls README.md submission.json train_seed1337.log train_seed7.log train_gpt.py Makefile train_gpt.cu common/optim.h >/dev/null"
check "submission: submission.json has the record fields and the byte count adds up" $PYTHON -c "
import json, os, sys
d = '$XD/sub'; s = json.load(open(d + '/submission.json'))
for k in ['author', 'github_id', 'name', 'blurb', 'date', 'val_loss', 'val_bpb', 'bytes_total', 'bytes_code', 'bytes_model_int6_zstd', 'seeds']:
    assert k in s, k
code = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs if not f.endswith(('.log', '.md', '.json')))
assert s['bytes_code'] == code and s['bytes_total'] == code + s['bytes_model_int6_zstd'], (s, code)
assert s['seeds'] == [1337, 7] and s['github_id'] == 'tester'"
check "submission: the folder builds and runs by itself (train_gpt.py, tiny config)" bash -c "cd $XD/sub && NO_NVCC=1 make -s train_gpt >/dev/null 2>&1 &&
    env OMP_NUM_THREADS=1 ITERATIONS=3 WARMUP_STEPS=0 DATA_PATH=$XD TOKENIZER_PATH=$SPM RUN_ID=inside $PYTHON train_gpt.py > inside.out 2>&1 &&
    grep -q '^final_int6_roundtrip_exact' logs/inside.txt && grep -qE '^\| EMA_WARMUP +\| 1 +\| env' logs/inside.txt"
sed 's/^Serialized model int6+zstd: [0-9]* bytes/Serialized model int6+zstd: 15900000 bytes/' "$XD/logs/warm_seed7.txt" > "$XD/big.txt"
check_fail "submission: over 16,000,000 bytes is refused, nothing written" 2 "over the 16,000,000-byte limit: no folder written" \
    bash -c "make -s submission NAME=big AUTHOR=a GITHUB=b OUT=$XD/big LOGS='$XD/logs/warm_seed1337.txt $XD/big.txt' 2>&1; r=\$?; [ ! -e $XD/big ] && exit \$r"
check_fail "submission: NAME is required" 2 "--name is required" make -s submission AUTHOR=a GITHUB=b LOGS="$XD/logs/warm_seed7.txt"

# eval --sample on the tiny checkpoint: runs, deterministic for a seed, valid UTF-8, token budget
CK=$XD/runs/warm_seed1337/final_model.ckpt
SAMPLE="env OMP_NUM_THREADS=1 ./eval --checkpoint $CK --device cpu --tokenizer-path $SPM"
check "sample: runs, and respects --max-new-tokens" bash -c "$SAMPLE --sample 'The meaning of' --max-new-tokens 17 --seed 5 > $XD/s1.out 2> $XD/s1.err &&
    grep -qE '^sample: device:cpu prompt_tokens:[0-9]+ new_tokens:([0-9]|1[0-7]) ' $XD/s1.err && tail -n +2 $XD/s1.out | grep -q '^The meaning of'"
check "sample: the same seed gives the same text, another seed another text" bash -c \
    "$SAMPLE --sample 'The meaning of' --max-new-tokens 17 --seed 5 > $XD/s2.out 2>/dev/null && cmp $XD/s1.out $XD/s2.out &&
     $SAMPLE --sample 'The meaning of' --max-new-tokens 17 --seed 6 > $XD/s3.out 2>/dev/null && ! cmp -s $XD/s1.out $XD/s3.out"
check "sample: valid UTF-8 (byte-level prompt, 40 tokens, from the artifact)" bash -c \
    "env OMP_NUM_THREADS=1 ./eval --artifact $XD/runs/warm_seed1337/final_model.ptz --device cpu --tokenizer-path $SPM --sample 'café 日本 🙂' \
     --max-new-tokens 40 --temperature 1.5 --top-k 0 --seed 1 > $XD/s4.out 2>/dev/null && $PYTHON -c \"open('$XD/s4.out', encoding='utf-8', errors='strict').read()\""
check "sample: --temperature 0 is greedy (the seed does not matter); --max-new-tokens 0 gives the prompt" bash -c \
    "$SAMPLE --sample 'Hello' --temperature 0 --seed 1 --max-new-tokens 10 > $XD/g1.out 2>/dev/null &&
     $SAMPLE --sample 'Hello' --temperature 0 --seed 2 --max-new-tokens 10 > $XD/g2.out 2>/dev/null && cmp $XD/g1.out $XD/g2.out &&
     $SAMPLE --sample 'Hello  world' --max-new-tokens 0 2>/dev/null | tail -n +2 | grep -qx 'Hello world'"
check_fail "sample: a bad --top-k is one clear line" 2 "--top-k -1: must be >= 0" $SAMPLE --sample x --top-k -1
fi
