# test_fuzz.sh: libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer over the parsers of
# files we do not trust: checkpoint_parse (.ckpt), tokenizer_parse (SentencePiece .model),
# artifact_parse (.ptz), artifact_parse_body (the .ptz body behind zstd) and shard_header_parse
# (the 1024-byte header of a token shard, common/data.h). Each target runs for
# FUZZ_TIME seconds (default 15), two at a time, from a small seed corpus made here; any crash,
# sanitizer report, leak, timeout or failed property (see test/fuzz/*.cpp) fails its check and
# leaves the input in $TEST_TMP/fuzz/crash-*. Longer hunts: FUZZ_TIME=600 bash test/run_tests.sh fuzz
# (KEEP_TMP=1 keeps the corpora).
# Needs clang with the fuzzer runtime (Debian: clang libclang-rt-14-dev); the Makefile does not
# build these: every test/*.cpp is a g++ tool, so the targets live in test/fuzz/.
FUZZ_TIME=${FUZZ_TIME:-15}
FUZZ_CXX=${FUZZ_CXX:-clang++}
FZ=$TEST_TMP/fuzz
FUZZ_TARGETS=(checkpoint tokenizer artifact artifact_body shard_header)
mkdir -p "$FZ" build/fuzz

fuzz_build() { # target: rebuild only when a source is newer than the binary
    local t=$1 bin=build/fuzz/fuzz_$1 zstd=()
    if [ -f "$bin" ] && [ -z "$(find test/fuzz/fuzz_$t.cpp common -newer "$bin" -name '*.h' -o -newer "$bin" -name "fuzz_$t.cpp" 2>/dev/null)" ]; then
        return 0
    fi
    echo '#include <zstd.h>' | $FUZZ_CXX -E -x c++ - >/dev/null 2>&1 && zstd=(-DUSE_ZSTD -lzstd)
    $FUZZ_CXX -g -O1 -std=c++17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        "test/fuzz/fuzz_$t.cpp" -o "$bin" "${zstd[@]}" > "$FZ/build_$t.log" 2>&1
}

if ! command -v "$FUZZ_CXX" >/dev/null 2>&1; then
    skip "fuzz: all targets" "$FUZZ_CXX not installed (apt-get install clang libclang-rt-14-dev)"
else
    # build, two at a time (waiting on our own jobs only: other groups may leave servers running)
    pids=()
    for t in "${FUZZ_TARGETS[@]}"; do
        ( fuzz_build "$t"; echo $? > "$FZ/build_$t.rc" ) &
        pids+=($!)
        if [ ${#pids[@]} -eq 2 ]; then wait "${pids[@]}"; pids=(); fi
    done
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"  # an odd number of targets leaves one running

    # seed corpora
    for t in "${FUZZ_TARGETS[@]}"; do mkdir -p "$FZ/seeds_$t" "$FZ/corpus_$t"; done
    make -s build/ckpt_tool build/quant_tool >/dev/null
    MICRO="--num-layers 1 --model-dim 16 --num-heads 2 --num-kv-heads 1 --vocab-size 8 --bigram-vocab-size 4 --bigram-dim 4 --rope-dims 4"
    build/ckpt_tool random "$FZ/seeds_checkpoint/micro.ckpt" $MICRO >/dev/null
    build/ckpt_tool random "$FZ/seeds_checkpoint/micro_ve.ckpt" $MICRO --ve-enabled 1 --ve-layers 0 --ve-dim 4 >/dev/null
    build/quant_tool seeds "$FZ/seeds_artifact"
    mv "$FZ"/seeds_artifact/body_*.bin "$FZ/seeds_artifact_body/"
    printf 'the cat sat on the mat 0123456789\nhello world, said the dog. caf\xc3\xa9\n%.0s' {1..50} > "$FZ/tok.txt"
    if command -v spm_train >/dev/null 2>&1; then
        spm_train --input="$FZ/tok.txt" --model_prefix="$FZ/seeds_tokenizer/bpe" --model_type=bpe --vocab_size=300 \
            --byte_fallback=true --character_coverage=1.0 --user_defined_symbols='<sep>' \
            --normalization_rule_name=identity --minloglevel=2 >/dev/null 2>&1
        spm_train --input="$FZ/tok.txt" --model_prefix="$FZ/seeds_tokenizer/uni" --model_type=unigram --vocab_size=30 \
            --normalization_rule_name=identity --minloglevel=2 >/dev/null 2>&1
        rm -f "$FZ"/seeds_tokenizer/*.vocab
    fi
    # shard headers: 8 bytes of file size, then the header (a good one, a truncated and a wrong-size one)
    $PYTHON - "$FZ/seeds_shard_header" <<'PY'
import struct, sys
d = sys.argv[1]
hdr = lambda magic, ver, count: struct.pack("<256i", magic, ver, count, *([0] * 253))
for name, size, h in [("good", 1024 + 2 * 5000, hdr(20240520, 1, 5000)), ("truncated", 1500, hdr(20240520, 1, 5000)),
                      ("empty", 1024, hdr(20240520, 1, 0)), ("magic", 1024, hdr(20240521, 1, 0)), ("short", 1024, hdr(20240520, 1, 0)[:100])]:
    open(f"{d}/{name}.bin", "wb").write(struct.pack("<q", size) + h)
PY
    [ -n "$(ls "$FZ/seeds_tokenizer")" ] || cp "$ROOT/../shared/data/tokenizers/fineweb_1024_bpe.model" "$FZ/seeds_tokenizer/" 2>/dev/null

    fuzz_run() { # target
        local t=$1
        [ "$(cat "$FZ/build_$t.rc")" = 0 ] || { echo 1 > "$FZ/run_$t.rc"; return; }
        build/fuzz/fuzz_$t -max_total_time="$FUZZ_TIME" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$FZ/crash-$t-" "$FZ/corpus_$t" "$FZ/seeds_$t" > "$FZ/run_$t.log" 2>&1
        echo $? > "$FZ/run_$t.rc"
    }
    pids=()
    for t in "${FUZZ_TARGETS[@]}"; do
        fuzz_run "$t" &
        pids+=($!)
        if [ ${#pids[@]} -eq 2 ]; then wait "${pids[@]}"; pids=(); fi
    done
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"  # an odd number of targets leaves one running
    for t in "${FUZZ_TARGETS[@]}"; do
        runs=$(grep -o 'number_of_executed_units: [0-9]*' "$FZ/run_$t.log" 2>/dev/null | grep -o '[0-9]*$')
        check "fuzz $t: ${FUZZ_TIME}s, ${runs:-0} inputs, no crash or sanitizer report" bash -c \
            "[ \"\$(cat $FZ/build_$t.rc)\" = 0 ] || { tail -20 $FZ/build_$t.log; exit 1; };
             [ \"\$(cat $FZ/run_$t.rc)\" = 0 ] || { grep -E -A12 'ERROR|runtime error|deadly|Test unit written' $FZ/run_$t.log | head -40; exit 1; }"
    done
fi
