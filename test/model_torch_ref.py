"""model_torch_ref.py: the bits of the model that come from torch's own arithmetic, computed
with torch, to check build/model_tool (common/model_cpu.h) against.

  model_torch_ref.py hash BUCKETS B T ID...    print "hash h0 h1 ..." as model_tool does
      BigramHash on an int32 tensor: the products wrap around in 32 bits and % is torch's
      (floor) modulo, exactly the reference's arithmetic.
  model_torch_ref.py rope T RD BASE FILE       compare FILE (model_tool rope output) with torch:
      inv_freq must match bit for bit (the reference builds it in float32 with torch);
      cos/sin within 2 float32 ulps (libm and torch's vectorized cos may round differently).
      Prints "ok" or the first mismatch, exit status 0 / 1.
"""
import sys

import numpy as np
import torch


def bigram_hash(ids, buckets):
    t = ids.to(torch.int32)
    mod = buckets - 1
    out = torch.empty_like(t)
    out[..., 0] = mod
    out[..., 1:] = torch.bitwise_xor(36313 * t[..., 1:], 27191 * t[..., :-1]) % mod
    return out


def rope_inv_freq(T, rd, base):
    # the rotary module's reference length is 1024; longer sequences scale the base (NTK)
    if T > 1024:
        base = base * ((T / 1024) ** (rd / (rd - 2)))
    return 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))


def ulps(a, b):
    """distance in float32 ulps between two float32 arrays"""
    ia = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    ib = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    # map the sign-magnitude ordering onto a line
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def main(argv):
    if len(argv) >= 5 and argv[1] == "hash":
        buckets, B, T = int(argv[2]), int(argv[3]), int(argv[4])
        ids = torch.tensor([int(x) for x in argv[5:]], dtype=torch.int64).reshape(B, T)
        print("hash " + " ".join(str(int(x)) for x in bigram_hash(ids, buckets).reshape(-1)))
        return 0
    if len(argv) == 6 and argv[1] == "rope":
        T, rd, base, path = int(argv[2]), int(argv[3]), float(argv[4]), argv[5]
        inv = rope_inv_freq(T, rd, base)
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        cos, sin = freqs.cos(), freqs.sin()
        seen = 0
        for line in open(path):
            f = line.split()
            if f[0] == "inv_freq":
                got = [int(x, 16) for x in f[1:]]
                want = [int(x) for x in inv.numpy().view(np.uint32)]
                if got != want:
                    print(f"inv_freq mismatch: model_tool {[hex(x) for x in got]} torch {[hex(x) for x in want]}")
                    return 1
                seen += 1
            elif f[0] in ("cos", "sin"):
                t = int(f[1])
                got = np.array([float(x) for x in f[2:]], dtype=np.float32)
                want = (cos if f[0] == "cos" else sin)[t].numpy()
                d = ulps(got, want)
                if len(got) != len(want) or d.max() > 2:
                    print(f"{f[0]}[{t}] differs by {d.max()} ulps: model_tool {got.tolist()} torch {want.tolist()}")
                    return 1
                seen += 1
        if seen < 3:
            print(f"{path}: expected inv_freq, cos and sin lines")
            return 1
        print("ok")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
