"""loader_ref.py: an independent Python model of the reference data loader, and a generator of
small shards, for test/test_data.sh (compared token for token with build/loader_dump).

The reference walks a (file, pos) cursor through the train shards, wrapping around. This model
is written differently on purpose: the train stream is the concatenation of all train shards
repeated forever, micro-step m reads the m-th block of world*(local+1) tokens of it, and the
(file, pos) cursor is derived afterwards from the last token read. If both agree, both are right.

  loader_ref.py gen DIR [--vocab V] [--seed S] [--train 1000,37,523] [--val 700,333]
  loader_ref.py train DIR VOCAB WORLD RANK GLOBAL_TOKENS GRAD_ACCUM MICRO_STEPS [SHARD POS]
  loader_ref.py val DIR VOCAB SEQ
  loader_ref.py bad KIND FILE [--vocab V]     KIND: magic version negcount truncated trailing
                                                     short token
Output formats are those of build/loader_dump (see test/loader_dump.cpp).
"""
import argparse
import glob
import os
import sys

import numpy as np

MAGIC, VERSION = 20240520, 1


def write_shard(path, tokens, magic=MAGIC, version=VERSION, count=None):
    header = np.zeros(256, dtype="<i4")
    header[0], header[1] = magic, version
    header[2] = len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def read_shard(path, vocab):
    raw = open(path, "rb").read()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    assert header[0] == MAGIC and header[1] == VERSION, path
    tokens = np.frombuffer(raw[1024:], dtype="<u2")
    assert len(tokens) == header[2], path
    assert len(tokens) == 0 or int(tokens.max()) < vocab, path
    return tokens.astype(np.int64)


def shards(directory, prefix, vocab):
    files = sorted(glob.glob(os.path.join(directory, prefix + "*.bin")))
    assert files, directory
    return [read_shard(f, vocab) for f in files]


def cmd_gen(a):
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    for split, lens in (("train", a.train), ("val", a.val)):
        for i, n in enumerate(int(s) for s in lens.split(",") if s):
            write_shard(os.path.join(a.dir, f"fineweb_{split}_{i:06d}.bin"), rng.integers(0, a.vocab, n))


def cmd_train(a):
    parts = shards(a.dir, "fineweb_train_", a.vocab)
    lens = np.array([len(p) for p in parts])
    starts = np.concatenate([[0], np.cumsum(lens)])  # file i holds stream[starts[i]:starts[i+1]]
    stream = np.concatenate(parts)
    total = len(stream)
    local = a.global_tokens // (a.world * a.grad_accum)
    span = local + 1
    origin = 0 if a.seek is None else int(starts[a.seek[0]]) + a.seek[1]
    out = []
    for m in range(a.micro_steps):
        first = origin + m * a.world * span + a.rank * span
        mine = stream[np.arange(first, first + span) % total]
        out.append("x " + " ".join(map(str, mine[:-1])))
        out.append("y " + " ".join(map(str, mine[1:])))
        # the cursor sits just after the last token this micro-step consumed (any rank's),
        # in the (non-empty) file that token came from
        last = (origin + (m + 1) * a.world * span - 1) % total
        f = int(np.searchsorted(starts, last, side="right")) - 1
        out.append(f"cursor {f} {last - starts[f] + 1}")
    print("\n".join(out))


def cmd_val(a):
    tokens = np.concatenate(shards(a.dir, "fineweb_val_", a.vocab))
    usable = (len(tokens) - 1) // a.seq * a.seq
    if usable <= 0:
        sys.exit("validation split too short")
    kept = tokens[: usable + 1]
    print(f"val {len(kept)}")
    print(" ".join(map(str, kept)))


def cmd_bad(a):
    good = np.arange(100) % a.vocab
    if a.kind == "magic":
        write_shard(a.file, good, magic=12345)
    elif a.kind == "version":
        write_shard(a.file, good, version=2)
    elif a.kind == "negcount":
        write_shard(a.file, good, count=-5)
    elif a.kind == "truncated":  # header says 100 tokens, 60 present
        write_shard(a.file, good[:60], count=100)
    elif a.kind == "trailing":  # header says 100 tokens, 101 present
        write_shard(a.file, np.append(good, 1), count=100)
    elif a.kind == "short":  # not even a whole header
        with open(a.file, "wb") as f:
            f.write(np.array([MAGIC, VERSION, 100] + [0] * 22, dtype="<i4").tobytes())
    elif a.kind == "token":  # id == vocab at token 17
        bad = good.copy()
        bad[17] = a.vocab
        write_shard(a.file, bad)
    else:
        sys.exit(f"unknown kind {a.kind}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--vocab", type=int, default=1000)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--train", default="1000,37,523")
    g.add_argument("--val", default="700,333")
    t = sub.add_parser("train")
    t.add_argument("dir")
    for name in ("vocab", "world", "rank", "global_tokens", "grad_accum", "micro_steps"):
        t.add_argument(name, type=int)
    t.add_argument("seek", type=int, nargs="*")
    v = sub.add_parser("val")
    v.add_argument("dir")
    v.add_argument("vocab", type=int)
    v.add_argument("seq", type=int)
    b = sub.add_parser("bad")
    b.add_argument("kind")
    b.add_argument("file")
    b.add_argument("--vocab", type=int, default=1000)
    a = p.parse_args()
    if a.cmd == "train":
        assert len(a.seek) in (0, 2), "SHARD POS come together"
        a.seek = a.seek or None
    {"gen": cmd_gen, "train": cmd_train, "val": cmd_val, "bad": cmd_bad}[a.cmd](a)


if __name__ == "__main__":
    main()
