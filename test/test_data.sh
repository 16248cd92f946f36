# test_data.sh: common/data.h (shards, train stream, val set) against test/loader_ref.py, an
# independent Python model of the reference loader, on small generated shards; then every kind
# of bad input must fail with exit status 1 and a one-line message naming the file and problem.
D=$TEST_TMP/data
DUMP=$ROOT/build/loader_dump
REF="$PYTHON $ROOT/test/loader_ref.py"
VOCAB=1000

check "data: build loader_dump" make -s build/loader_dump
# three train shards: 1000, 37 (shorter than most takes) and 523 tokens; two val shards
check "data: generate shards" $REF gen $D/ok --vocab $VOCAB
# empty shards first and in the middle: the stream must skip them
check "data: generate shards with empty ones" $REF gen $D/empty --vocab $VOCAB --train 0,500,0,300

# same_output NAME ARGS...: loader_dump and loader_ref.py print the same (non-empty) lines
same_output() {
    local out=$TEST_TMP/same.$$
    "$DUMP" "$@" > $out.c || return 1
    $REF "$@" > $out.py || return 1
    [ -s $out.c ] || { echo "empty output"; return 1; }
    cmp $out.c $out.py || { diff $out.c $out.py | head -5; return 1; }
}

# Global batch 256 tokens: each micro-step consumes 256 + world tokens, 264 per optimizer step
# whatever the world size, so 14 steps (3696 tokens) wrap around the 1560-token train set twice,
# mid-take, and takes cross every shard boundary.
for world in 1 2 8; do
    ga=$((8 / world))
    for ((rank = 0; rank < world; rank++)); do
        check "data: train world $world rank $rank = reference" same_output train $D/ok $VOCAB $world $rank 256 $ga $((14 * ga))
    done
done
# takes of 40 that end exactly on the end of shard 0 (cursor 0 1000: the stream moves on lazily)
check "data: train takes ending on a shard boundary" same_output train $D/ok $VOCAB 1 0 39 1 100
# global not divisible by world*grad_accum: floor, as the reference
check "data: train batch floor division" same_output train $D/ok $VOCAB 8 7 250 1 12
check "data: train with empty shards" same_output train $D/empty $VOCAB 2 1 128 4 40
# seeking to a saved cursor (resume), including a cursor at the very end of a shard
check "data: seek mid-shard = reference" same_output train $D/ok $VOCAB 2 0 256 4 30 1 5
check "data: seek to end of shard = reference" same_output train $D/ok $VOCAB 2 1 256 4 30 0 1000
resume_matches() { # the batches after micro-step 9 equal those of a run resumed from its cursor
    local full; full=$("$DUMP" train $D/ok $VOCAB 2 1 256 4 25) || return 1
    local cur; cur=$(sed -n 27p <<<"$full" | cut -d' ' -f2-)
    [ "$(sed -n 28,75p <<<"$full")" = "$("$DUMP" train $D/ok $VOCAB 2 1 256 4 16 $cur)" ]
}
check "data: resume from cursor = uninterrupted run" resume_matches

# val: 700 + 333 = 1033 tokens
check "data: val seq 64 (cut inside the last shard) = reference" same_output val $D/ok $VOCAB 64
check "data: val seq 700 (keeps 1 token of the last shard) = reference" same_output val $D/ok $VOCAB 700
check "data: val seq 1032 (keeps everything) = reference" same_output val $D/ok $VOCAB 1032

# ---- bad inputs: exit status 1, one line naming the file and the problem
check_fail "data: missing directory" 1 "$D/nope: data directory not found.*HINT: .make data." \
    "$DUMP" train $D/nope $VOCAB 1 0 256 8 1
mkdir -p $D/none && touch $D/none/fineweb_val_000000.bin $D/none/fineweb_train_000000.txt
check_fail "data: no matching train shards" 1 "$D/none: no files matching fineweb_train_\*\.bin" \
    "$DUMP" train $D/none $VOCAB 1 0 256 8 1
mkdir -p $D/xz && touch $D/xz/fineweb_train_000000.bin.xz
check_fail "data: only .bin.xz shards" 1 "$D/xz: no files matching fineweb_train_\*\.bin \(found 1 .*xz -dk" \
    "$DUMP" train $D/xz $VOCAB 1 0 256 8 1

# bad_dir KIND: a copy of the good shards with train shard 1 replaced by a bad one of that kind
bad_dir() {
    mkdir -p $D/bad_$1 && cp $D/ok/*.bin $D/bad_$1/ && $REF bad $1 $D/bad_$1/fineweb_train_000001.bin --vocab $VOCAB
}
F=fineweb_train_000001.bin
for k in magic version negcount truncated trailing short token; do bad_dir $k; done
check_fail "data: wrong magic" 1 "bad_magic/$F: bad shard magic 12345 \(expected 20240520\)" \
    "$DUMP" train $D/bad_magic $VOCAB 1 0 256 8 1
check_fail "data: wrong version" 1 "bad_version/$F: unsupported shard version 2 \(expected 1\)" \
    "$DUMP" train $D/bad_version $VOCAB 1 0 256 8 1
check_fail "data: negative token count" 1 "bad_negcount/$F: bad token count -5" \
    "$DUMP" train $D/bad_negcount $VOCAB 1 0 256 8 1
check_fail "data: truncated shard" 1 "bad_truncated/$F: shard size mismatch.* 1224 bytes, file has 1144 bytes \(truncated\)" \
    "$DUMP" train $D/bad_truncated $VOCAB 1 0 256 8 1
check_fail "data: trailing bytes" 1 "bad_trailing/$F: shard size mismatch.* 1224 bytes, file has 1226 bytes \(trailing bytes\)" \
    "$DUMP" train $D/bad_trailing $VOCAB 1 0 256 8 1
check_fail "data: file shorter than the header" 1 "bad_short/$F: file too short for the 1024-byte shard header \(100 bytes\)" \
    "$DUMP" train $D/bad_short $VOCAB 1 0 256 8 1
# header checks run for every shard at startup: nothing is printed before the error
no_batch_before_error() { local out; out=$("$DUMP" train $D/bad_magic $VOCAB 1 0 256 8 1 2>/dev/null); [ -z "$out" ]; }
check "data: bad header in a later shard fails at startup" no_batch_before_error
# token ids are checked when the shard is loaded: here when the stream reaches shard 1
check_fail "data: token id >= vocab" 1 "bad_token/$F: token id $VOCAB at token 17 \(byte offset 1058\) is out of range for vocab size $VOCAB" \
    "$DUMP" train $D/bad_token $VOCAB 1 0 256 8 40
check_fail "data: token id >= vocab (shard reader)" 1 "bad_token/$F: token id $VOCAB at token 17 .*vocab size $VOCAB" \
    "$DUMP" shard $D/bad_token/$F $VOCAB
check_fail "data: bad val shard" 1 "bad_val/fineweb_val_000001.bin: bad shard magic" \
    bash -c "mkdir -p $D/bad_val && cp $D/ok/*.bin $D/bad_val/ && $REF bad magic $D/bad_val/fineweb_val_000001.bin && $DUMP val $D/bad_val $VOCAB 64"
check_fail "data: val split too short" 1 "$D/ok: validation split too short for seq_len 1033 \(1033 tokens in 2 fineweb_val_\*\.bin shards" \
    "$DUMP" val $D/ok $VOCAB 1033
check_fail "data: seek past the end of a shard" 1 "fineweb_train_000000.bin: data cursor position 1001 out of range" \
    "$DUMP" train $D/ok $VOCAB 1 0 256 8 1 0 1001
check_fail "data: seek to a missing shard" 1 "shard index 3 out of range \(3 train shards\)" \
    "$DUMP" train $D/ok $VOCAB 1 0 256 8 1 3 0
