"""Tiny real-text shards for test/test_extras.sh: the first tokens of one shared corpus shard
(FineWeb, sp1024), split into a train shard and a val shard (the val part starts at a BOS).

    extras_data.py SHARD.bin.xz OUT_DIR TRAIN_TOKENS VAL_TOKENS
"""
import lzma, struct, sys

MAGIC, VERSION, BOS = 20240520, 1, 1


def write_shard(path, toks):
    head = struct.pack("<256i", MAGIC, VERSION, len(toks), *([0] * 253))
    with open(path, "wb") as f:
        f.write(head + struct.pack(f"<{len(toks)}H", *toks))


def main():
    src, out, n_train, n_val = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    want = n_train + n_val + 100000  # room to find a BOS for the val start
    with lzma.open(src) as f:
        head = f.read(1024)
        magic, version, count = struct.unpack("<3i", head[:12])
        assert magic == MAGIC and version == VERSION, f"{src}: not a shard"
        body = f.read(2 * min(want, count))
    toks = list(struct.unpack(f"<{len(body) // 2}H", body))
    v0 = toks.index(BOS, n_train)
    assert v0 + n_val <= len(toks), "shard too short"
    write_shard(f"{out}/fineweb_train_000000.bin", toks[:n_train])
    write_shard(f"{out}/fineweb_val_000000.bin", toks[v0:v0 + n_val])


if __name__ == "__main__":
    main()
