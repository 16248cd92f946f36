# test_tokenizer.sh: common/tokenizer.h (via build/tok_tool) against the sentencepiece library:
# pieces, types, byte-count tables and decoding for the shared tokenizer and for one we train
# here with byte fallback; then malformed model files, which must fail with one clear line.
TOK=$ROOT/build/tok_tool
SHARED_MODEL=$ROOT/../shared/data/tokenizers/fineweb_1024_bpe.model
TOKCHECK="$PYTHON $ROOT/test/tokenizer_check.py"
TD=$TEST_TMP/tokenizer
mkdir -p "$TD"

check "tok_tool builds" make -s build/tok_tool

# the shared tokenizer: every id, the tables padded past the tokenizer, decoding
if [ -f "$SHARED_MODEL" ]; then
    check "shared: every id matches sentencepiece" $TOKCHECK luts "$SHARED_MODEL" "$TOK"
    check "shared: tables padded to 1100 ids" $TOKCHECK luts "$SHARED_MODEL" "$TOK" 1100
    check "shared: decode matches sentencepiece" $TOKCHECK decode "$SHARED_MODEL" "$TOK"
    check "shared: ./eval --dump-tokenizer prints the same 1024 lines" bash -c \
        "diff <($ROOT/eval --dump-tokenizer --tokenizer-path $SHARED_MODEL) <($TOK dump $SHARED_MODEL) && [ \$($ROOT/eval --dump-tokenizer --tokenizer-path $SHARED_MODEL | wc -l) = 1024 ]"
    check "shared: damaged copies load or fail cleanly" $TOKCHECK robust "$SHARED_MODEL" "$TOK" "$TD/robust"
else
    for n in "every id matches sentencepiece" "tables padded to 1100 ids" "decode matches sentencepiece" \
             "./eval --dump-tokenizer prints the same 1024 lines" "damaged copies load or fail cleanly"; do
        skip "shared: $n" "no shared tokenizer at $SHARED_MODEL"
    done
fi

if ! command -v spm_train >/dev/null 2>&1; then
    skip "tokenizer: trained-model and malformed-file checks" "spm_train not installed (apt-get install sentencepiece)"
else
# a small BPE tokenizer with byte fallback, a user-defined and a control symbol, trained on a
# text every Debian system ships (ASCII only, so accented letters later need byte pieces)
TRAIN_TEXT=/usr/share/common-licenses/GPL-3
[ -f "$TRAIN_TEXT" ] || { printf 'the cat sat on the mat 0123456789\nhello world, said the dog.\n%.0s' {1..200} > "$TD/train.txt"; TRAIN_TEXT=$TD/train.txt; }
check "train a byte-fallback tokenizer" spm_train --input="$TRAIN_TEXT" --model_prefix="$TD/bf" --model_type=bpe \
    --vocab_size=360 --byte_fallback=true --character_coverage=1.0 --user_defined_symbols='<sep>,☃' \
    --control_symbols='<ctl>' --minloglevel=2
check "trained: every id matches sentencepiece" $TOKCHECK luts "$TD/bf.model" "$TOK"
check "trained: decode (with byte pieces) matches sentencepiece" $TOKCHECK decode "$TD/bf.model" "$TOK"
check "trained+unused: make a model with unused pieces" $TOKCHECK mutate "$TD/bf.model" "$TD/unused.model"
check "trained+unused: every id matches sentencepiece" $TOKCHECK luts "$TD/unused.model" "$TOK"
check "trained+unused: decode matches sentencepiece" $TOKCHECK decode "$TD/unused.model" "$TOK"
check "trained: damaged copies load or fail cleanly" $TOKCHECK robust "$TD/bf.model" "$TOK" "$TD/robust"

# malformed files: status 1 and one line naming the file and the problem
check "write malformed models" $TOKCHECK mkbad "$TD/bf.model" "$TD/bad"
B=$TD/bad
check "hand-built minimal model loads" "$TOK" dump "$B/good.model"
check_fail "bad: missing file" 1 "error: $TD/nope.model: no such" "$TOK" dump "$TD/nope.model"
check_fail "bad: empty file" 1 "error: $B/empty.model: empty file" "$TOK" dump "$B/empty.model"
check_fail "bad: cut after 1 byte" 1 "error: $B/trunc1.model: .*truncated varint" "$TOK" dump "$B/trunc1.model"
check_fail "bad: cut after 10 bytes" 1 "error: $B/trunc10.model: .*runs past the end" "$TOK" dump "$B/trunc10.model"
check_fail "bad: last byte cut" 1 "error: $B/trunc_end.model: .*(runs past the end|truncated)" "$TOK" decode "$B/trunc_end.model"
check_fail "bad: random garbage" 1 "error: $B/garbage.model: not a valid SentencePiece model" "$TOK" dump "$B/garbage.model"
check_fail "bad: a text file" 1 "error: $B/text.model: not a valid SentencePiece model" "$TOK" dump "$B/text.model"
check_fail "bad: protobuf without pieces" 1 "error: $B/nopieces.model: .*no pieces" "$TOK" dump "$B/nopieces.model"
check_fail "bad: piece without string" 1 "error: $B/nostring.model: .*piece 0 has no piece string" "$TOK" dump "$B/nostring.model"
check_fail "bad: empty piece" 1 "error: $B/emptypiece.model: .*piece 3 is an empty string" "$TOK" dump "$B/emptypiece.model"
check_fail "bad: piece not UTF-8" 1 "error: $B/badutf8.model: .*piece 3 is not valid UTF-8" "$TOK" dump "$B/badutf8.model"
check_fail "bad: byte piece <0xZZ>" 1 "error: $B/badbyte.model: .*piece 3 is a byte piece but not of the form <0xHH>" "$TOK" dump "$B/badbyte.model"
check_fail "bad: byte piece in lower case" 1 "error: $B/lowerbyte.model: .*not of the form <0xHH>" "$TOK" dump "$B/lowerbyte.model"
check_fail "bad: unknown piece type" 1 "error: $B/badtype.model: .*piece 3 has unknown type 9" "$TOK" dump "$B/badtype.model"
check_fail "bad: repeated piece" 1 "error: $B/dup.model: .*piece 3 repeats" "$TOK" dump "$B/dup.model"
check_fail "bad: piece as a varint" 1 "error: $B/wirepiece.model: .*wire type 0, expected 2" "$TOK" dump "$B/wirepiece.model"
check_fail "bad: score as a varint" 1 "error: $B/wirescore.model: .*score has wire type 0, expected 5" "$TOK" dump "$B/wirescore.model"
check_fail "bad: group wire type" 1 "error: $B/group.model: .*bad wire type 3" "$TOK" dump "$B/group.model"
check_fail "bad: wire type 7" 1 "error: $B/wire7.model: .*bad wire type 7" "$TOK" dump "$B/wire7.model"
check_fail "bad: field number 0" 1 "error: $B/field0.model: .*bad field number 0" "$TOK" dump "$B/field0.model"
check_fail "bad: 12-byte varint" 1 "error: $B/longvarint.model: .*varint too long" "$TOK" dump "$B/longvarint.model"
check_fail "bad: length past the end" 1 "error: $B/pastend.model: .*length 1000 .* runs past the end" "$TOK" dump "$B/pastend.model"
check_fail "bad: short fixed64" 1 "error: $B/fixed64.model: .*truncated fixed64" "$TOK" dump "$B/fixed64.model"
check_fail "decode: id out of range" 1 "id 5000 out of range" bash -c "echo '1 2 5000' | '$TOK' decode '$B/good.model'"
check_fail "decode: not a number" 1 "expected whitespace-separated token ids" bash -c "echo '1 x' | '$TOK' decode '$B/good.model'"
check_fail "usage" 2 "usage: tok_tool" "$TOK" frobnicate x

# decoding drops the first piece's "▁" differently depending on the normalizer flags
for flags in "--remove_extra_whitespaces=false" "--remove_extra_whitespaces=false --add_dummy_prefix=false"; do
    check "trained $flags: decode matches sentencepiece" bash -c "spm_train --input='$TRAIN_TEXT' \
        --model_prefix='$TD/ws' --model_type=bpe --vocab_size=360 --byte_fallback=true --character_coverage=1.0 \
        --minloglevel=2 $flags && $TOKCHECK decode '$TD/ws.model' '$TOK'"
done
fi
