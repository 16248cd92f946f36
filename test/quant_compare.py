"""quant_compare.py: are two checkpoints identical, config and tensors, bit for bit?

    $PYTHON test/quant_compare.py EXPECTED.ckpt ACTUAL.ckpt [--summary]

Used on the codes (dev/ref/quant.py --dump vs build/quant_tool dump) and on dequantized weights.
On a difference it names the tensors and the first differing elements, and exits 1.
--summary also prints how often each GPTQ-lite percentile index was chosen (from NAME.pct).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "ref"))
from ckpt import read_ckpt  # noqa: E402


def raw(t):
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        return t.view(torch.int16)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    return t


def main(argv):
    if len(argv) < 2:
        print("usage: quant_compare.py EXPECTED.ckpt ACTUAL.ckpt [--summary]", file=sys.stderr)
        return 2
    (ca, ta), (cb, tb) = read_ckpt(argv[0]), read_ckpt(argv[1])
    bad = []
    if list(ca.items()) != list(cb.items()):
        diff = [k for k in list(ca) + list(cb) if ca.get(k) != cb.get(k)][:5]
        bad.append(f"config differs: {[(k, ca.get(k), cb.get(k)) for k in diff]}"
                   + ("" if diff else " (order)"))
    if list(ta) != list(tb):
        only_a = [k for k in ta if k not in tb][:5]
        only_b = [k for k in tb if k not in ta][:5]
        bad.append(f"tensor names differ: only in expected {only_a}, only in actual {only_b}"
                   + ("" if only_a or only_b else " (order)"))
    for name in ta:
        if name not in tb:
            continue
        a, b = ta[name], tb[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            bad.append(f"{name}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
            continue
        ra, rb = raw(a).reshape(-1), raw(b).reshape(-1)
        ne = (ra != rb).nonzero().reshape(-1)
        if len(ne):
            i = ne[:4].tolist()
            fa, fb = a.reshape(-1), b.reshape(-1)
            bad.append(f"{name}: {len(ne)} of {a.numel()} elements differ, e.g. at {i}: "
                       f"expected {[fa[k].item() for k in i]} got {[fb[k].item() for k in i]}")
    if bad:
        for line in bad[:12]:
            print("DIFF " + line)
        if len(bad) > 12:
            print(f"DIFF ... and {len(bad) - 12} more")
        return 1
    msg = f"identical: {len(ca)} config entries, {len(ta)} tensors"
    if "--summary" in argv:
        counts = {}
        for name, t in ta.items():
            if name.endswith(".pct"):
                counts[int(t.item())] = counts.get(int(t.item()), 0) + 1
        msg += f"; GPTQ-lite percentile index -> tensors: {dict(sorted(counts.items()))}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
