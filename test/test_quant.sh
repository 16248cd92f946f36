# test_quant.sh: the export path (common/quant.h, ./quantize) against dev/ref/quant.py, the
# reference quantizer in PyTorch: the same int codes, fp16 scales and chosen GPTQ-lite
# percentiles; after compress -> decompress -> dequantize, the same weights bit for bit; then
# bad artifact files, each one clear line and exit status 1.
# Full-size checkpoints are compressed at zstd level 1 here (level 22 takes ~90 s per model on
# two cores and the bytes out of the decompressor are the same); the small cases use level 22.
make -s quantize build/quant_tool build/ckpt_tool >/dev/null
QT=$ROOT/build/quant_tool
CK=$ROOT/build/ckpt_tool
QREF="$PYTHON $ROOT/dev/ref/quant.py"
QCMP="$PYTHON $ROOT/test/quant_compare.py"
QD=$TEST_TMP/quant
mkdir -p "$QD"

# every error must be exactly one line on stderr; a second line turns the exit status into 99
one_line() {
    local err rc
    err=$("$@" 2>&1 >/dev/null); rc=$?
    echo "$err"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || return 99
    return $rc
}

# 1. the arithmetic on its own: torch.quantile's interpolation, fp16 and bf16 rounding
$PYTHON test/quant_quantile.py gen "$QD"
$QT quantiles "$QD/q_in.ckpt" "$QD/q_out.ckpt"
$QT convert "$QD/conv_in.f32" "$QD/conv.f16" "$QD/conv.bf16"
check "quantiles (fused lerp) and fp16/bf16 rounding equal torch's" $PYTHON test/quant_quantile.py check "$QD"

# 2. a tensor for every corner of the policy (test/quant_cases.py), MLP int5 and int6, level 22
for b in 5 6; do
    $PYTHON test/quant_cases.py "$QD/cases$b.ckpt" --mlp-bits $b
    $QT quantize "$QD/cases$b.ckpt" "$QD/cases$b.ptz" >/dev/null
    $QT dump "$QD/cases$b.ptz" "$QD/codes$b.ckpt"
    $QT dequantize "$QD/cases$b.ptz" "$QD/deq$b.ckpt"
    $QREF "$QD/cases$b.ckpt" --dump "$QD/ref_codes$b.ckpt" --dequant "$QD/ref_deq$b.ckpt" >/dev/null
    check "cases, MLP int$b: codes, scales, percentiles equal the reference's" $QCMP "$QD/ref_codes$b.ckpt" "$QD/codes$b.ckpt"
    check "cases, MLP int$b: zstd-22 round trip gives the reference's weights bit for bit" $QCMP "$QD/ref_deq$b.ckpt" "$QD/deq$b.ckpt"
done
check "cases: GPTQ-lite picks more than one percentile" bash -c \
    "$QCMP $QD/ref_codes6.ckpt $QD/codes6.ckpt --summary | grep -qE 'index -> tensors: \{0: [0-9]+, 1: [0-9]+, 2: [0-9]+, 4: '"
check "same bytes with 1 and 2 threads" bash -c "OMP_NUM_THREADS=1 $QT quantize $QD/cases5.ckpt $QD/t1.ptz --level 3 >/dev/null &&
    OMP_NUM_THREADS=2 $QT quantize $QD/cases5.ckpt $QD/t2.ptz --level 3 >/dev/null && cmp $QD/t1.ptz $QD/t2.ptz"

# 3. full-size random checkpoints of both presets through ./quantize
for p in seed record; do
    $CK random "$QD/$p.ckpt" --preset $p >/dev/null
    ./quantize --checkpoint "$QD/$p.ckpt" --out "$QD/$p.ptz" --zstd-level 1 > "$QD/$p.log" 2>&1
    check "$p: ./quantize reports the artifact's size and the total" bash -c \
        "grep -q \"^Serialized model int6+zstd: \$(stat -c %s $QD/$p.ptz) bytes\" $QD/$p.log && grep -q '^Total submission size int6+zstd: [0-9]* bytes (limit 16000000' $QD/$p.log"
    $QT dump "$QD/$p.ptz" "$QD/codes_$p.ckpt"
    $QREF "$QD/$p.ckpt" --dump "$QD/ref_codes_$p.ckpt" --dequant "$QD/ref_deq_$p.ckpt" >/dev/null
    check "$p: codes, scales, percentiles equal the reference's" $QCMP "$QD/ref_codes_$p.ckpt" "$QD/codes_$p.ckpt"
done
$QT dequantize "$QD/seed.ptz" "$QD/deq_seed.ckpt"
check "seed: round trip gives the reference's weights bit for bit" $QCMP "$QD/ref_deq_seed.ckpt" "$QD/deq_seed.ckpt"
./quantize --checkpoint "$QD/record.ckpt" --dequantize --out "$QD/deq_record.ckpt" --zstd-level 1 >/dev/null
check "record: ./quantize --dequantize gives the reference's weights bit for bit" $QCMP "$QD/ref_deq_record.ckpt" "$QD/deq_record.ckpt"
check "seed: MLP int5, attention int6, embeddings int8" bash -c \
    "grep -q '^quant: int5 mlp  *22 ' $QD/seed.log && grep -q '^quant: int6 attn  *44 ' $QD/seed.log && grep -q '^quant: int8 embed  *1 ' $QD/seed.log"
check "record: MLP and attention int6" bash -c "grep -q '^quant: int6 mlp  *22 ' $QD/record.log && grep -q '^quant: int6 attn  *44 ' $QD/record.log"
check "--dry-run shows the plan" bash -c "./quantize --checkpoint $QD/seed.ckpt --dry-run | grep -qE '^  blocks.0.mlp.fc.weight +f32 +786432 int5$'"

# 4. a small model at the real level 22, through ./quantize
TINY="--num-layers 3 --model-dim 64 --num-heads 4 --num-kv-heads 2 --vocab-size 96 --bigram-vocab-size 64 --bigram-dim 16"
$CK random "$QD/tiny.ckpt" $TINY >/dev/null
check "tiny: ./quantize at level 22 writes an artifact that reads back" bash -c \
    "./quantize --checkpoint $QD/tiny.ckpt --out $QD/tiny.ptz > $QD/tiny.log && $QT load $QD/tiny.ptz | grep -q '^ok 36 tensors'"
check "code size is the sum of the files it lists" bash -c \
    "line=\$(grep '^Code size:' $QD/tiny.log); n=\$(echo \"\$line\" | sed 's/Code size: \([0-9]*\) bytes.*/\1/');
     files=\$(echo \"\$line\" | sed 's/.*bundle): //'); [ \"\$n\" = \"\$(cat \$files | wc -c)\" ] && echo \"\$files\" | grep -q '^train_gpt.cu common/utils.h'"

# 5. usage errors
check_fail "quantize: --out is required"        2 "--out FILE is required" one_line ./quantize --checkpoint "$QD/tiny.ckpt"
check_fail "quantize: bad --zstd-level"         2 "ZSTD_LEVEL=0: must be in 1..22" one_line ./quantize --checkpoint "$QD/tiny.ckpt" --out "$QD/x.ptz" --zstd-level 0
check_fail "quantize: --source-dir missing"     2 "--source-dir $QD/nodir: no such directory" one_line ./quantize --checkpoint "$QD/tiny.ckpt" --out "$QD/x.ptz" --source-dir "$QD/nodir"
check_fail "quantize: no train_gpt.cu there"    1 "train_gpt.cu: not found, so the code size is unknown" one_line ./quantize --checkpoint "$QD/tiny.ckpt" --out "$QD/x.ptz" --source-dir "$QD"

$PYTHON - "$QD/nan.ckpt" <<'EOF'
import sys, torch
sys.path.insert(0, "dev/ref")
from ckpt import write_ckpt
w = torch.randn(300, 256)
w[7, 9] = float("nan")
write_ckpt(sys.argv[1], {"MLP_QUANT_BITS": "5"}, {"blocks.0.mlp.fc.weight": w})
EOF
check_fail "quantize: NaN weights"              1 "nan.ckpt: tensor blocks.0.mlp.fc.weight: element 1801 is nan" one_line $QT quantize "$QD/nan.ckpt" "$QD/x.ptz"

# 6. bad artifact files: one clear line naming the file, exit status 1, never a crash
A=$QD/cases5.ptz
sz=$(stat -c %s "$A")
for off in 0 4 8 12 19 20 25 $((sz / 2)) $((sz - 5)) $((sz - 1)); do
    head -c $off "$A" > "$QD/trunc.ptz"
    check_fail "artifact truncated at $off bytes" 1 "trunc.ptz: (not a quantized artifact|truncated)" one_line $QT load "$QD/trunc.ptz"
done
for off in 21 $((sz / 3)) $((sz / 2)) $((sz - 3)); do
    cp "$A" "$QD/flip.ptz"
    printf "\\x$(printf %x $(( ($(od -An -tu1 -j$off -N1 "$A") ^ 0x10) )))" | dd of="$QD/flip.ptz" bs=1 seek=$off conv=notrunc 2>/dev/null
    check_fail "artifact bit flip at byte $off" 1 "flip.ptz: (truncated or )?corrupt" one_line $QT load "$QD/flip.ptz"
done
cp "$A" "$QD/magic.ptz"; printf 'XX' | dd of="$QD/magic.ptz" bs=1 seek=0 conv=notrunc 2>/dev/null
check_fail "artifact: wrong magic"            1 "magic.ptz: not a quantized artifact \(bad magic" one_line $QT load "$QD/magic.ptz"
cp "$A" "$QD/ver.ptz"; printf '\x07' | dd of="$QD/ver.ptz" bs=1 seek=8 conv=notrunc 2>/dev/null
check_fail "artifact: wrong version"          1 "ver.ptz: unsupported artifact version 7" one_line $QT load "$QD/ver.ptz"
cp "$A" "$QD/size.ptz"; printf '\x01' | dd of="$QD/size.ptz" bs=1 seek=12 conv=notrunc 2>/dev/null
check_fail "artifact: body size off"          1 "size.ptz: corrupt \\(the zstd frame holds [0-9]+ bytes but the header says" one_line $QT load "$QD/size.ptz"
cp "$A" "$QD/huge.ptz"; printf '\xff\xff\xff\x7f' | dd of="$QD/huge.ptz" bs=1 seek=16 conv=notrunc 2>/dev/null
check_fail "artifact: absurd body size"       1 "huge.ptz: truncated or corrupt \\(the header claims a [0-9]+-byte body" one_line $QT load "$QD/huge.ptz"
{ head -c 20 "$A"; head -c 3000 /dev/urandom; } > "$QD/garbage.ptz"
check_fail "artifact: zstd garbage"           1 "garbage.ptz: truncated or corrupt" one_line $QT load "$QD/garbage.ptz"
{ cat "$A"; printf 'junk'; } > "$QD/trail.ptz"
check_fail "artifact: trailing bytes"         1 "trail.ptz: truncated or corrupt \\(zstd: " one_line $QT load "$QD/trail.ptz"
: > "$QD/empty.ptz"
check_fail "artifact: empty file"             1 "empty.ptz: not a quantized artifact" one_line $QT load "$QD/empty.ptz"
check_fail "artifact: missing file"           1 "nothere.ptz: no such file" one_line $QT load "$QD/nothere.ptz"
check_fail "artifact: a checkpoint instead"   1 "tiny.ckpt: not a quantized artifact \(bad magic" one_line $QT load "$QD/tiny.ckpt"
# well-formed zstd and checksums around a body that breaks one rule
while IFS='|' read -r kind pat; do
    $QT craft "$kind" "$QD/craft.ptz"
    check_fail "artifact body: $kind" 1 "craft.ptz: $pat" one_line $QT load "$QD/craft.ptz"
done <<'EOF'
crc|corrupt \(checksum mismatch in the decompressed body\)
absurd-shape|tensor a.weight: absurd shape
huge-dims|tensor a.weight: absurd shape
too-many-dims|tensor a.weight: 5 dimensions \(at most 4\)
unknown-scheme|tensor a.weight: unknown scheme code 9
unknown-dtype|tensor a.weight: unknown dtype code 17
scheme-dtype|tensor a.weight: scheme int8 does not fit dtype i32
bad-pct|tensor a.weight: bad percentile index 7
pct-not-int6|tensor a.weight: bad percentile index 0
short-payload|tensor a.weight: data runs past the end of the body
long-payload|payload is 401 bytes but the tensor table accounts for 400
duplicate|tensor a appears twice
empty-name|empty tensor name in the table
code-range|tensor a.weight: code 20 out of the int5 range
many-tensors|absurd tensor count
EOF

# ours, off by default: GPTQ-lite choosing the clip percentile per row (QUANT_PCT_PER_ROW=1).
# Each row keeps its own best of the same five candidates, so the error can only go down.
make -s build/ckpt_tool >/dev/null
CKPT_TOOL_STD=0.6 build/ckpt_tool random "$QD/wide.ckpt" --preset record --num-layers 1 --model-dim 320 --ve-layers 0 \
    --bigram-vocab-size 64 >/dev/null
mse_int6() { grep 'reconstruction mse' | sed -E 's/.* int6 ([0-9.e+-]+) .*/\1/'; }
export -f mse_int6
check "per-row percentile: never a larger int6 reconstruction error than per tensor" bash -c "
    a=\$(./quantize --checkpoint $QD/wide.ckpt --out $QD/wide_t.ptz --zstd-level 1 | mse_int6)
    b=\$(./quantize --checkpoint $QD/wide.ckpt --out $QD/wide_r.ptz --zstd-level 1 --quant-pct-per-row 1 | mse_int6)
    echo \"per tensor \$a  per row \$b\"; $PYTHON -c \"import sys; a, b = float('\$a'), float('\$b'); sys.exit(0 if b <= a and b < a * 0.999 else 1)\""
check "per-row percentile: the artifact reads back (dequantize)" bash -c \
    "./quantize --checkpoint $QD/wide.ckpt --out $QD/wide_r.ckpt --zstd-level 1 --quant-pct-per-row 1 --dequantize >/dev/null && build/ckpt_tool load $QD/wide_r.ckpt >/dev/null"

# a CPU-trained checkpoint (3 steps of ./train_gpt, width 288 so the attention and MLP matrices
# are above the 65,536-element passthrough): codes, scales, percentiles and the dequantized
# weights equal the reference quantizer's, for both presets (MLP int5 and int6)
$PYTHON test/loader_ref.py gen "$QD/tdata" --vocab 256 --seed 3 --train 4000 --val 600 >/dev/null
for pre in seed record; do
    b=$([ $pre = seed ] && echo 5 || echo 6)
    env VOCAB_SIZE=256 NUM_LAYERS=1 MODEL_DIM=288 NUM_HEADS=4 NUM_KV_HEADS=2 BIGRAM_VOCAB_SIZE=64 BIGRAM_DIM=32 \
        VE_LAYERS=0 TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=512 ITERATIONS=3 WARMUP_STEPS=0 MAX_WALLCLOCK_SECONDS=0 \
        DATA_PATH="$QD/tdata" TRAIN_ONLY=1 ZSTD_LEVEL=1 ./train_gpt --device cpu --preset $pre --out-dir "$QD/trained_$pre" \
        --run-id quant_$pre > "$QD/trained_$pre.log" 2>&1
    $QT quantize "$QD/trained_$pre/final_model.ckpt" "$QD/tr$b.ptz" --mlp-bits $b --level 3 >/dev/null
    $QT dump "$QD/tr$b.ptz" "$QD/tr_codes$b.ckpt"
    $QT dequantize "$QD/tr$b.ptz" "$QD/tr_deq$b.ckpt"
    $QREF "$QD/trained_$pre/final_model.ckpt" --mlp-bits $b --dump "$QD/tr_ref_codes$b.ckpt" --dequant "$QD/tr_ref_deq$b.ckpt" >/dev/null
    check "CPU-trained ($pre): codes, scales, percentiles equal the reference's" $QCMP "$QD/tr_ref_codes$b.ckpt" "$QD/tr_codes$b.ckpt"
    check "CPU-trained ($pre): dequantized weights equal the reference's bit for bit" $QCMP "$QD/tr_ref_deq$b.ckpt" "$QD/tr_deq$b.ckpt"
done
