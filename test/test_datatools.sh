# test_datatools.sh: the data tools of dev/data/.
#  1. fineweb.py (the FineWeb downloader) against a fake parameter-golf mirror served on 127.0.0.1
#     by test/datatools_server.py (and once by the stock `python3 -m http.server`): manifest-driven
#     file list, --train-shards N, resume of a partial download (HTTP Range, or from the start when
#     the server has no ranges), retry after a dropped connection, size and header checks, offline.
#  2. tokenize_text.py on a small generated text: shards = [BOS]+encode(doc), val = the first
#     documents, shard size; round trip to text through an independent reader (and build/loader_dump).
#  3. `make data` in a fresh copy of the tree: offline (unreachable server) it builds the stand-in
#     dataset at train_gpt's default paths; online it replaces it with FineWeb from the mirror.
# Nothing here talks to anything but 127.0.0.1; every server stops by itself after 150 s.
DT=$TEST_TMP/datatools
mkdir -p $DT
CHK="$PYTHON $ROOT/test/datatools_check.py"
FW="$PYTHON -S $ROOT/dev/data/fineweb.py"  # -S: no site-packages, so it must need only the standard library
TT="$PYTHON $ROOT/dev/data/tokenize_text.py"
DS=datasets/fineweb10B_sp1024
DT_PIDS=()

# dt_server NAME ROOT [ARGS...]: start test/datatools_server.py on ROOT, set DT_URL
dt_server() {
    local name=$1 root=$2; shift 2
    rm -f $DT/$name.port
    $PYTHON $ROOT/test/datatools_server.py $root $DT/$name.port --log $DT/$name.log --max-seconds 150 "$@" \
        >/dev/null 2>&1 &
    DT_PIDS+=($!)
    local i
    for i in $(seq 200); do [ -s $DT/$name.port ] && break; sleep 0.05; done
    DT_URL="http://127.0.0.1:$(cat $DT/$name.port 2>/dev/null)"
}
dt_free_port() { $PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# the mirror's files under DIR are byte-identical to the mirror's (tokenizer, val, first N train)
dt_same() {
    local mirror=$1 dir=$2 n=$3 names="tokenizers/fineweb_1024_bpe.model tokenizers/fineweb_1024_bpe.vocab"
    names+=" $DS/fineweb_val_000000.bin $DS/fineweb_val_000001.bin"
    local i; for ((i = 0; i < n; i++)); do names+=" $DS/fineweb_train_00000$i.bin"; done
    $CHK same $mirror $dir $names || return 1
    [ $(ls $dir/$DS/fineweb_train_*.bin | wc -l) -eq $n ] || { echo "expected $n train shards"; return 1; }
}
DEAD="http://127.0.0.1:$(dt_free_port)"  # nothing listens there: "offline"

# --- 1. the downloader ---------------------------------------------------------------------
$CHK mirror $DT/mirror
dt_server main $DT/mirror
URL=$DT_URL
check "datatools: fetch val + 2 train shards from the loopback mirror" $FW --out $DT/d1 --base-url $URL --train-shards 2
check "datatools: fetched files are the mirror's, and only 2 train shards" dt_same $DT/mirror $DT/d1 2
check "datatools: manifest saved" test -s $DT/d1/manifest.json
: > $DT/main.log
check_fail "datatools: run again = nothing to fetch" 0 "6 files \(6 already here\)" $FW --out $DT/d1 --base-url $URL --train-shards 2
check "datatools: ... and no shard requested" bash -c "! grep -q '\.bin' $DT/main.log"
check "datatools: --train-shards 4 adds two" $FW --out $DT/d1 --base-url $URL --train-shards 4
check "datatools: now 4 train shards" dt_same $DT/mirror $DT/d1 4
check_fail "datatools: --train-shards beyond the manifest" 2 "has only 4 train shards" \
    $FW --out $DT/d1 --base-url $URL --train-shards 5
check_fail "datatools: unreachable, files complete = ok" 0 "all 8 files are present" \
    $FW --out $DT/d1 --base-url $DEAD --train-shards 4
check_fail "datatools: unreachable, nothing here = exit 3" 3 "notice: cannot reach .*manifest.json" \
    $FW --out $DT/d0 --base-url $DEAD
check_fail "datatools: unreachable, files missing = exit 3" 3 "1 of 8 files missing" \
    bash -c "rm $DT/d1/$DS/fineweb_train_000003.bin && $FW --out $DT/d1 --base-url $DEAD --train-shards 4"

# resume: a partial .part is completed with a Range request
mkdir -p $DT/d2/$DS
head -c 1500 $DT/mirror/$DS/fineweb_train_000000.bin > $DT/d2/$DS/fineweb_train_000000.bin.part
: > $DT/main.log
check_fail "datatools: resume a partial download" 0 "fineweb_train_000000.bin: resuming at 1.5 kB" \
    $FW --out $DT/d2 --base-url $URL --train-shards 1
check "datatools: ... with a Range request" grep -q "fineweb_train_000000.bin 206 range=1500" $DT/main.log
check "datatools: ... and the file is right" dt_same $DT/mirror $DT/d2 1
check "datatools: no .part files left" bash -c "! ls $DT/d2/$DS/*.part 2>/dev/null"

# the stock python http.server does no ranges: the partial file is fetched again from the start
PORT=$(dt_free_port)
timeout 150 $PYTHON -m http.server --bind 127.0.0.1 --directory $DT/mirror $PORT >/dev/null 2>&1 &
DT_PIDS+=($!)
for i in $(seq 100); do $PYTHON -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break; sleep 0.1; done
mkdir -p $DT/d3/$DS
head -c 2000 $DT/mirror/$DS/fineweb_val_000000.bin > $DT/d3/$DS/fineweb_val_000000.bin.part
check_fail "datatools: no Range support (python -m http.server) = fetch again" 0 "does not resume downloads" \
    $FW --out $DT/d3 --base-url http://127.0.0.1:$PORT/ --train-shards 1
check "datatools: ... and the files are right" dt_same $DT/mirror $DT/d3 1

# a connection dropped mid-file: retried, resumed where it broke
dt_server drop $DT/mirror --drop fineweb_train_000001.bin:1800
check_fail "datatools: dropped connection is retried and resumed" 0 "retrying in 1s.*have 1800 bytes" \
    $FW --out $DT/d4 --base-url $DT_URL --train-shards 2
check "datatools: ... with a Range request" grep -q "fineweb_train_000001.bin 206 range=1800" $DT/drop.log
check "datatools: ... and the files are right" dt_same $DT/mirror $DT/d4 2

# size and header checks
cp $DT/d4/$DS/fineweb_train_000001.bin $DT/good.bin
head -c 2500 $DT/good.bin > $DT/d4/$DS/fineweb_train_000001.bin
check_fail "datatools: a local file of the wrong size is rejected" 1 \
    "fineweb_train_000001.bin: 2500 bytes, expected 3024 bytes from the manifest" \
    $FW --out $DT/d4 --base-url $URL --train-shards 2
check "datatools: ... --force replaces it" $FW --out $DT/d4 --base-url $URL --train-shards 2 --force
check "datatools: ... with the right one" cmp $DT/good.bin $DT/d4/$DS/fineweb_train_000001.bin
printf 'XXXX' | dd of=$DT/d4/$DS/fineweb_val_000000.bin conv=notrunc status=none
check_fail "datatools: a local shard with a bad header is rejected" 1 "fineweb_val_000000.bin: bad shard magic" \
    $FW --out $DT/d4 --base-url $URL --train-shards 2
echo extra >> $DT/d4/tokenizers/fineweb_1024_bpe.vocab
check_fail "datatools: a local tokenizer file of another size is rejected" 1 \
    "fineweb_1024_bpe.vocab: 706 bytes, expected 700 bytes on the server" $FW --out $DT/d4 --base-url $URL --train-shards 2
check "datatools: ... --force replaces both" bash -c "
    $FW --out $DT/d4 --base-url $URL --train-shards 2 --force && $CHK same $DT/mirror $DT/d4 \
        $DS/fineweb_val_000000.bin tokenizers/fineweb_1024_bpe.vocab"
$CHK mirror $DT/mirror_short --truncate fineweb_train_000001.bin:2000
dt_server short $DT/mirror_short
check_fail "datatools: a server file of the wrong size is rejected" 1 \
    "fineweb_train_000001.bin: the server has 2000 bytes, the manifest says 3024" \
    $FW --out $DT/d5 --base-url $DT_URL --train-shards 2
check "datatools: ... and not kept" test ! -e $DT/d5/$DS/fineweb_train_000001.bin
$CHK mirror $DT/mirror_magic --bad-magic fineweb_val_000001.bin
dt_server magic $DT/mirror_magic
check_fail "datatools: a shard with a bad header is rejected" 1 "fineweb_val_000001.bin.part: bad shard magic 12345" \
    $FW --out $DT/d6 --base-url $DT_URL --train-shards 0
check "datatools: ... and not kept" bash -c "! ls $DT/d6/$DS/fineweb_val_000001.bin* 2>/dev/null"
check_fail "datatools: bad --base-url" 2 "must be an http" $FW --out $DT/d7 --base-url ftp://x

# --- 2. tokenize your own text -------------------------------------------------------------
$CHK gendocs 400 $DT/docs.jsonl $DT/docs.txt
check "datatools: tokenize jsonl, training a tokenizer" $TT $DT/docs.jsonl --out-dir $DT/tok1 \
    --tokenizer $DT/tok/my_512.model --train-tokenizer --vocab-size 512 --val-docs 25 --shard-tokens 1500
check "datatools: tokenizer settings are the challenge's" $CHK spmspec $DT/tok/my_512.model
check "datatools: round trip text -> shards -> text (independent reader)" \
    $CHK roundtrip $DT/tok1 $DT/tok/my_512.model $DT/docs.jsonl 25 1500
check "datatools: text file (blank-line documents) = the same shards" bash -c "
    $TT $DT/docs.txt --out-dir $DT/tok2 --tokenizer $DT/tok/my_512.model --val-docs 25 --shard-tokens 1500 &&
    diff -r $DT/tok1 $DT/tok2"
check_fail "datatools: tokenize refuses to overwrite shards" 1 "already holds .* shards" \
    $TT $DT/docs.txt --out-dir $DT/tok2 --tokenizer $DT/tok/my_512.model
check "datatools: --overwrite, --val-tokens, default shard size" bash -c "
    $TT $DT/docs.jsonl --out-dir $DT/tok2 --tokenizer $DT/tok/my_512.model --val-tokens 3000 --overwrite &&
    $CHK verify $DT/tok2 --min-val 3000 --vocab 512 && ls $DT/tok2 | tr '\n' ' ' | grep -qx 'fineweb_train_000000.bin fineweb_val_000000.bin '"
check_fail "datatools: --val-docs must leave train documents" 2 "there are 400 documents" \
    $TT $DT/docs.jsonl --out-dir $DT/tok3 --tokenizer $DT/tok/my_512.model --val-docs 400
printf '{"text": "a"}\n{"text": "b"}\nnot json\n' > $DT/bad.jsonl
check_fail "datatools: a bad JSON line is named" 1 "bad.jsonl:3: not a JSON line" \
    $TT $DT/bad.jsonl --out-dir $DT/tok4 --tokenizer $DT/tok/my_512.model
check_fail "datatools: a missing tokenizer is named" 1 "nope.model: no such tokenizer model" \
    $TT $DT/docs.jsonl --out-dir $DT/tok5 --tokenizer $DT/nope.model

# the same shards through common/data.h (build/loader_dump), when it is there
if [ -f $ROOT/test/loader_dump.cpp ] && make -s -C $ROOT build/loader_dump >/dev/null 2>&1; then
    dt_dump_same() { # loader_dump and datatools_check.py print the same
        "$ROOT/build/loader_dump" "$@" > $DT/ld.c || return 1
        $CHK dump "$1" "$2" ${4:-} > $DT/ld.py || return 1
        cmp $DT/ld.c $DT/ld.py
    }
    for f in $DT/tok1/fineweb_*.bin; do
        check "datatools: loader_dump shard $(basename $f) = independent reader" dt_dump_same shard $f 512
    done
    check "datatools: loader_dump val = independent reader" dt_dump_same val $DT/tok1 512 64
else
    skip "datatools: loader_dump = independent reader (common/data.h round trip)" "build/loader_dump does not build"
fi

# --- 3. make data from a fresh copy of the tree --------------------------------------------
# (needs the KJV Debian packages, or apt-get to install them: skipped where neither works, e.g. on
# an offline GPU machine)
if ! dpkg -s bible-kjv-text >/dev/null 2>&1 && ! timeout 60 apt-get install -y -q bible-kjv bible-kjv-text >/dev/null 2>&1; then
    skip "datatools: make data from a fresh copy (offline stand-in)" "bible-kjv-text not installed and apt-get cannot install it"
else
CL=$DT/clone
mkdir -p $CL
(cd $ROOT && git ls-files -co --exclude-standard | grep -v -e '^data/' -e '^build/' |
    while IFS= read -r f; do [ -f "$f" ] && printf '%s\0' "$f"; done | tar cf - --null -T -) | tar xf - -C $CL
if grep -qE '^data:|dev/data/data.mk' $CL/Makefile 2>/dev/null; then MK="make -s data"; else MK="make -s -f dev/data/data.mk data"; fi
check_fail "datatools: make data, offline = the stand-in dataset (NOT FineWeb)" 0 "This is NOT FineWeb" \
    bash -c "cd $CL && FINEWEB_BASE_URL=$DEAD $MK"
check "datatools: ... at train_gpt's default paths, with a big enough val split" \
    $CHK verify $CL/data/$DS --min-val 300000 --min-train 500000
check "datatools: ... with its tokenizer and the NOT_FINEWEB.txt note" bash -c "
    test -s $CL/data/tokenizers/fineweb_1024_bpe.model && grep -q 'status: complete' $CL/data/$DS/NOT_FINEWEB.txt"
if [ -x $ROOT/build/loader_dump ] && type dt_dump_same >/dev/null 2>&1; then
    check "datatools: ... readable by common/data.h (val at seq 2048)" dt_dump_same val $CL/data/$DS 1024 2048
else
    skip "datatools: ... readable by common/data.h (val at seq 2048)" "build/loader_dump does not build"
fi
check_fail "datatools: make data again = nothing to do" 0 "already built" bash -c "cd $CL && FINEWEB_BASE_URL=$DEAD $MK"
check_fail "datatools: make data, online = FineWeb replaces the stand-in" 0 "replacing it" \
    bash -c "cd $CL && FINEWEB_BASE_URL=$URL TRAIN_SHARDS=2 $MK"
check "datatools: ... the mirror's files, no NOT_FINEWEB.txt" bash -c "
    $CHK same $DT/mirror $CL/data tokenizers/fineweb_1024_bpe.model $DS/fineweb_val_000001.bin $DS/fineweb_train_000001.bin &&
    test ! -e $CL/data/$DS/NOT_FINEWEB.txt && test ! -e $CL/data/$DS/fineweb_train_000002.bin"
check_fail "datatools: make data offline keeps FineWeb" 0 "all 6 files are present" \
    bash -c "cd $CL && FINEWEB_BASE_URL=$DEAD TRAIN_SHARDS=2 $MK"
check_fail "datatools: the offline builder never overwrites FineWeb" 1 "not written by this builder" \
    bash -c "cd $CL && $PYTHON dev/data/offline_data.py"
fi

for pid in "${DT_PIDS[@]}"; do kill $pid 2>/dev/null; done
wait "${DT_PIDS[@]}" 2>/dev/null
