# test_ckpt.sh: the .ckpt format: bit-identical round trips and clear errors on bad files.
make -s build/ckpt_tool >/dev/null
CK=build/ckpt_tool
TINY="--num-layers 3 --model-dim 64 --num-heads 4 --num-kv-heads 2 --vocab-size 96 --bigram-vocab-size 64 --bigram-dim 16 --ve-enabled 1 --ve-layers 2 --ve-dim 16"
$CK random $TEST_TMP/seed.ckpt >/dev/null
$CK random $TEST_TMP/rec.ckpt --preset record >/dev/null
$CK random $TEST_TMP/tiny.ckpt $TINY >/dev/null
check "seed ckpt: write, read, rewrite is bit-identical"   $CK roundtrip $TEST_TMP/seed.ckpt $TEST_TMP/seed2.ckpt
check "record ckpt: bit-identical round trip"              $CK roundtrip $TEST_TMP/rec.ckpt $TEST_TMP/rec2.ckpt
check "tiny ckpt: loads as a model"                        $CK load $TEST_TMP/tiny.ckpt
check "record ckpt: has 26993756 params"                   bash -c "$CK load $TEST_TMP/rec.ckpt | grep -q 'ok 121 tensors 26993756 params'"
check "state_dict names and order"                         bash -c "$CK dump $TEST_TMP/tiny.ckpt | cut -d' ' -f1-3 | tr '\n' ' ' | grep -q '^skip_weights f32 (1,64) tok_emb.weight bf16 (96,64) bigram.scale f32 () bigram.embed.weight bf16 (64,16) bigram.proj.weight f32 (64,16) smear.gate f32 (64) blocks.0.attn_scale f32 (64) blocks.0.mlp_scale f32 (64) blocks.0.resid_mix f32 (2,64) blocks.0.attn.q_gain f32 (4) blocks.0.attn.c_q.weight f32 (64,64) blocks.0.attn.c_k.weight f32 (32,64) blocks.0.attn.c_v.weight f32 (32,64) blocks.0.attn.proj.weight f32 (64,64) blocks.0.mlp.fc.weight f32 (192,64) blocks.0.mlp.proj.weight f32 (64,192) .*ve_shared.scale f32 () ve_shared.embed.weight bf16 (96,16) ve_shared.proj.weight f32 (32,16) ve_layer_scales.0 f32 (1) \$'"
check "eval reads a checkpoint"                            bash -c "./eval --checkpoint $TEST_TMP/tiny.ckpt --dry-run | grep -q 'model_params:'"

# bad files: every one a clear one-line error naming the file, exit status 1, never a crash
sz=$(stat -c %s $TEST_TMP/tiny.ckpt)
for off in 0 5 12 40 200 $((sz / 2)) $((sz - 5)) $((sz - 1)); do
    head -c $off $TEST_TMP/tiny.ckpt > $TEST_TMP/trunc.ckpt
    check_fail "truncated at $off bytes"  1 "trunc.ckpt: (not a checkpoint|truncated|checksum mismatch)" $CK load $TEST_TMP/trunc.ckpt
done
cp $TEST_TMP/tiny.ckpt $TEST_TMP/flip.ckpt
printf '\x5a' | dd of=$TEST_TMP/flip.ckpt bs=1 seek=$((sz / 3)) conv=notrunc 2>/dev/null
check_fail "bit flip in the data"             1 "flip.ckpt: checksum mismatch" $CK load $TEST_TMP/flip.ckpt
cp $TEST_TMP/tiny.ckpt $TEST_TMP/magic.ckpt; printf 'XX' | dd of=$TEST_TMP/magic.ckpt bs=1 seek=0 conv=notrunc 2>/dev/null
check_fail "wrong magic"                      1 "magic.ckpt: not a checkpoint \(bad magic" $CK load $TEST_TMP/magic.ckpt
cp $TEST_TMP/tiny.ckpt $TEST_TMP/ver.ckpt; printf '\x07' | dd of=$TEST_TMP/ver.ckpt bs=1 seek=8 conv=notrunc 2>/dev/null
check_fail "wrong version"                    1 "ver.ckpt: unsupported checkpoint version 7" $CK load $TEST_TMP/ver.ckpt
cat $TEST_TMP/tiny.ckpt > $TEST_TMP/trail.ckpt; printf 'junk' >> $TEST_TMP/trail.ckpt
check_fail "trailing bytes"                   1 "trail.ckpt: checksum mismatch" $CK load $TEST_TMP/trail.ckpt
head -c 4096 /dev/urandom > $TEST_TMP/garbage.ckpt
check_fail "random garbage"                   1 "garbage.ckpt: not a checkpoint" $CK load $TEST_TMP/garbage.ckpt
: > $TEST_TMP/empty.ckpt
check_fail "empty file"                       1 "empty.ckpt: not a checkpoint" $CK load $TEST_TMP/empty.ckpt
check_fail "missing file"                     1 "nothere.ckpt: no such file" $CK load $TEST_TMP/nothere.ckpt
$CK edit $TEST_TMP/tiny.ckpt $TEST_TMP/drop.ckpt -blocks.1.mlp.fc.weight
check_fail "missing tensor"                   1 "drop.ckpt: tensor blocks.1.mlp.fc.weight is missing" $CK load $TEST_TMP/drop.ckpt
$CK edit $TEST_TMP/tiny.ckpt $TEST_TMP/dim.ckpt MODEL_DIM=128
check_fail "config does not match shapes"     1 "dim.ckpt: tensor skip_weights has shape \(1,64,\) but the config needs \(1,128,\)" $CK load $TEST_TMP/dim.ckpt
$CK edit $TEST_TMP/tiny.ckpt $TEST_TMP/ve.ckpt VE_ENABLED=0
check_fail "extra tensors for the config"     1 "ve.ckpt: unexpected tensor ve_shared.scale" $CK load $TEST_TMP/ve.ckpt
$CK edit $TEST_TMP/tiny.ckpt $TEST_TMP/badcfg.ckpt NUM_HEADS=5
check_fail "impossible config in a file"      2 "badcfg.ckpt: config NUM_HEADS=5 does not divide MODEL_DIM=64" $CK load $TEST_TMP/badcfg.ckpt
check_fail "eval: corrupt checkpoint"         1 "flip.ckpt: checksum mismatch" ./eval --checkpoint $TEST_TMP/flip.ckpt
check_fail "quantize: not a checkpoint"       1 "garbage.ckpt: not a checkpoint" ./quantize --checkpoint $TEST_TMP/garbage.ckpt --out $TEST_TMP/x.ptz

# C++ <-> Python (dev/ref/ckpt.py): both sides read what the other writes, tensor for tensor
check "python reads the C++ checkpoint (same tensors, same bytes)" same_out \
    "$PYTHON dev/ref/ckpt.py dump $TEST_TMP/tiny.ckpt | grep '^tensor ' | cut -d' ' -f2-" "$CK dump $TEST_TMP/tiny.ckpt"
check "python re-writes the C++ checkpoint byte for byte" bash -c \
    "$PYTHON dev/ref/ckpt.py rewrite $TEST_TMP/tiny.ckpt $TEST_TMP/py.ckpt && cmp $TEST_TMP/tiny.ckpt $TEST_TMP/py.ckpt"
check "C++ reads a python-written record checkpoint" bash -c \
    "$PYTHON dev/ref/model.py init $TEST_TMP/pyrec.ckpt --preset record --random >/dev/null && $CK load $TEST_TMP/pyrec.ckpt | grep -q 'ok 121 tensors 26993756 params' && $CK roundtrip $TEST_TMP/pyrec.ckpt $TEST_TMP/pyrec2.ckpt"
check "state_dict -> ckpt -> state_dict -> ckpt is identical (C++ side)" bash -c \
    "$PYTHON dev/convert_checkpoint.py ckpt2pt $TEST_TMP/tiny.ckpt $TEST_TMP/tiny.pt >/dev/null && $PYTHON dev/convert_checkpoint.py pt2ckpt $TEST_TMP/tiny.pt $TEST_TMP/tiny3.ckpt --ve-layers 2 >/dev/null && $CK dump $TEST_TMP/tiny.ckpt > $TEST_TMP/t1.txt && $CK dump $TEST_TMP/tiny3.ckpt > $TEST_TMP/t3.txt && [ -s $TEST_TMP/t1.txt ] && diff $TEST_TMP/t1.txt $TEST_TMP/t3.txt"
