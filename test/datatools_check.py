"""datatools_check.py: helpers for test_datatools.sh, independent of dev/data/ (own shard reader).

    mirror DIR [--truncate NAME:BYTES] [--bad-magic NAME]
        a fake parameter-golf mirror: DIR/manifest.json, DIR/datasets/fineweb10B_sp1024/ with 2 val
        shards (1000 + 500 tokens) and 4 train shards (1000, 1000, 1000, 500; shard_size 1000),
        DIR/tokenizers/fineweb_1024_bpe.{model,vocab} (opaque bytes). --truncate / --bad-magic
        damage one shard (a file that does not match the manifest, a file with a bad header).
    same DIR_A DIR_B NAME...       files NAME under both dirs are byte-identical
    verify DIR [--min-val N] [--min-train N] [--vocab V]
        every shard in DIR is valid; both splits present; the streams start with BOS; ids < V
    gendocs N OUT.jsonl OUT.txt    N small synthetic documents, as JSON lines and as a text file
                                   with blank lines between documents (multi-line documents inside)
    roundtrip DIR MODEL DOCS.jsonl VAL_DOCS SHARD_TOKENS
        the shards in DIR are exactly [BOS]+encode(doc) for every document, the first VAL_DOCS in
        val; every shard but a split's last holds SHARD_TOKENS; decoding gives the text back
    dump shard FILE | dump val DIR SEQ    what build/loader_dump prints, from this reader
    spmspec MODEL                  the SentencePiece model was trained with the challenge's settings
                                   (read from its protobuf by hand: no protobuf module needed)
"""
import json
import os
import random
import re
import struct
import sys

MAGIC, VERSION, HDR = 20240520, 1, 1024


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= HDR, f"{path}: short header"
    header = struct.unpack("<256i", data[:HDR])
    assert header[0] == MAGIC and header[1] == VERSION, f"{path}: bad magic/version {header[:2]}"
    assert all(v == 0 for v in header[3:]), f"{path}: header words 3..255 not zero"
    n = header[2]
    assert len(data) == HDR + 2 * n, f"{path}: {len(data)} bytes for {n} tokens"
    return list(struct.unpack(f"<{n}H", data[HDR:]))


def split_files(d, split):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if re.fullmatch(rf"fineweb_{split}_\d{{6}}\.bin", f))


def write_shard(path, toks):
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", MAGIC, VERSION, len(toks), *([0] * 253)))
        f.write(struct.pack(f"<{len(toks)}H", *toks))


def cmd_mirror(argv):
    d = argv[0]
    opts = dict(zip(argv[1::2], argv[2::2]))
    rng = random.Random(7)
    ds = os.path.join(d, "datasets", "fineweb10B_sp1024")
    os.makedirs(ds, exist_ok=True)
    os.makedirs(os.path.join(d, "tokenizers"), exist_ok=True)
    for split, sizes in (("val", [1000, 500]), ("train", [1000, 1000, 1000, 500])):
        for i, n in enumerate(sizes):
            toks = [1 if j % 97 == 0 else rng.randrange(4, 1024) for j in range(n)]
            write_shard(os.path.join(ds, f"fineweb_{split}_{i:06d}.bin"), toks)
    for name, n in (("fineweb_1024_bpe.model", 5000), ("fineweb_1024_bpe.vocab", 700)):
        with open(os.path.join(d, "tokenizers", name), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(n)))
    manifest = {
        "version": "10B", "num_docs": 60, "num_val_docs": 16, "shuffle_seed": 1337, "shard_size": 1000,
        "append_eos": False,
        "tokenizers": [{"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "vocab_size": 1024, "bos_id": 1,
                        "eos_id": 2, "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
                       {"name": "sp_bpe_512", "kind": "sentencepiece_bpe", "vocab_size": 512,
                        "model_path": "tokenizers/fineweb_512_bpe.model"}],
        "datasets": [{"name": "fineweb10B_sp512", "tokenizer_name": "sp_bpe_512",
                      "stats": {"files_val": 1, "files_train": 1, "tokens_val": 10, "tokens_train": 10}},
                     {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "vocab_size": 1024,
                      "stats": {"docs_total": 60, "docs_val": 16, "docs_train": 44, "files_total": 6,
                                "files_val": 2, "files_train": 4, "tokens_total": 5000,
                                "tokens_val": 1500, "tokens_train": 3500}}],
    }
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    if "--truncate" in opts:
        name, nbytes = opts["--truncate"].rsplit(":", 1)
        with open(os.path.join(ds, name), "r+b") as f:
            f.truncate(int(nbytes))
    if "--bad-magic" in opts:
        with open(os.path.join(ds, opts["--bad-magic"]), "r+b") as f:
            f.write(struct.pack("<i", 12345))


def cmd_same(argv):
    a, b, names = argv[0], argv[1], argv[2:]
    for n in names:
        with open(os.path.join(a, n), "rb") as f, open(os.path.join(b, n), "rb") as g:
            assert f.read() == g.read(), f"{n} differs between {a} and {b}"


def cmd_verify(argv):
    d = argv[0]
    opts = dict(zip(argv[1::2], argv[2::2]))
    vocab = int(opts.get("--vocab", 1024))
    for split in ("val", "train"):
        files = split_files(d, split)
        assert files, f"{d}: no {split} shards"
        toks = [t for f in files for t in read_shard(f)]
        assert toks and toks[0] == 1, f"{d}: {split} stream does not start with BOS"
        assert max(toks) < vocab, f"{d}: {split} token id {max(toks)} >= vocab {vocab}"
        need = int(opts.get(f"--min-{split}", 1))
        assert len(toks) >= need, f"{d}: {split} has {len(toks)} tokens, want >= {need}"
        print(f"{split}: {len(files)} files, {len(toks)} tokens, {toks.count(1)} documents")


WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "river mountain seven garden quickly slowly bright ancient letter number window").split()


def cmd_gendocs(argv):
    n, jsonl, txt = int(argv[0]), argv[1], argv[2]
    rng = random.Random(11)
    docs = []
    for i in range(n):
        paras = []
        for _ in range(rng.randrange(1, 3)):
            lines = []
            for _ in range(rng.randrange(1, 4)):
                words = [rng.choice(WORDS) for _ in range(rng.randrange(3, 15))]
                if rng.random() < 0.3:
                    words.append(str(rng.randrange(100000)))  # digits: split_digits
                if rng.random() < 0.1:
                    words.append(rng.choice(["café", "naïve", "Zürich", "€5", "日本"]))  # byte fallback
                lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
            paras.append("\n".join(lines))
        docs.append(f"Document {i}.\n" + "\n".join(paras))  # no blank lines inside a document
    with open(jsonl, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": len(d), "text": d}, ensure_ascii=False) + "\n")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")


def cmd_roundtrip(argv):
    import sentencepiece as spm
    d, model, docs_path, val_docs, shard_tokens = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(docs_path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    expect = {"val": [], "train": []}
    for i, doc in enumerate(docs):
        expect["val" if i < val_docs else "train"] += [1] + sp.encode(doc)
    for split in ("val", "train"):
        files = split_files(d, split)
        per_file = [read_shard(p) for p in files]
        for p, t in zip(files[:-1], per_file[:-1]):
            assert len(t) == shard_tokens, f"{p}: {len(t)} tokens, every shard but the last should hold {shard_tokens}"
        assert 0 < len(per_file[-1]) <= shard_tokens, f"{files[-1]}: {len(per_file[-1])} tokens"
        got = [t for toks in per_file for t in toks]
        assert got == expect[split], f"{split}: shard tokens differ from [BOS]+encode(doc) ({len(got)} vs {len(expect[split])})"
        # and back to text: split at BOS, decode, compare with the documents (whitespace normalized)
        texts, cur = [], None
        for t in got:
            if t == 1:
                cur = []
                texts.append(cur)
            else:
                cur.append(t)
        src = docs[:val_docs] if split == "val" else docs[val_docs:]
        assert len(texts) == len(src), f"{split}: {len(texts)} BOS-separated documents, expected {len(src)}"
        for i, (ids, doc) in enumerate(zip(texts, src)):
            back = sp.decode(ids)
            assert back == " ".join(doc.split()), f"{split} doc {i}: decoded {back[:60]!r} != {doc[:60]!r}"
        print(f"{split}: {len(files)} files, {len(got)} tokens, {len(texts)} documents round-trip")


def cmd_dump(argv):
    if argv[0] == "shard":
        t = read_shard(argv[1])
        print(f"shard {len(t)}")
    else:
        t = [x for f in split_files(argv[1], "val") for x in read_shard(f)]
        seq = int(argv[2])
        t = t[:(len(t) - 1) // seq * seq + 1]
        print(f"val {len(t)}")
    print(" ".join(map(str, t)))


def pb_fields(b):
    """Top-level (field number, value) pairs of a protobuf message: varints as int, the rest as bytes."""
    def varint(i):
        r = s = 0
        while True:
            c = b[i]
            i += 1
            r |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return r, i
    i, out = 0, {}
    while i < len(b):
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(i)
        elif wire == 2:
            n, i = varint(i)
            v, i = b[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            v, i = b[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected protobuf wire type {wire}")
        out[field] = v  # repeated fields (the pieces) keep only the last: not needed here
    return out


def cmd_spmspec(argv):
    model = pb_fields(open(argv[0], "rb").read())
    trainer, normalizer = pb_fields(model[2]), pb_fields(model[3])  # ModelProto.trainer_spec, normalizer_spec
    # TrainerSpec: model_type=3 (BPE=2), split_digits=25, byte_fallback=35, unk/bos/eos/pad = 40..43
    want = {3: 2, 25: 1, 35: 1, 40: 3, 41: 1, 42: 2, 43: 0}
    got = {k: trainer.get(k) for k in want}
    assert got == want, f"{argv[0]}: trainer spec {got}, want {want}"
    # NormalizerSpec: name=1, add_dummy_prefix=3
    assert normalizer.get(1) == b"nmt_nfkc" and normalizer.get(3) == 0, f"{argv[0]}: normalizer {normalizer.get(1)}"
    print(f"{argv[0]}: BPE, vocab {trainer.get(4)}, byte fallback, split digits, nmt_nfkc, no dummy prefix")


if __name__ == "__main__":
    cmds = {"mirror": cmd_mirror, "same": cmd_same, "verify": cmd_verify, "gendocs": cmd_gendocs,
            "roundtrip": cmd_roundtrip, "dump": cmd_dump, "spmspec": cmd_spmspec}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](sys.argv[2:])
    except AssertionError as e:
        sys.exit(f"error: {e}")
