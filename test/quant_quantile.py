"""quant_quantile.py: common/quant.h's quantile and fp16/bf16 rounding against torch, directly.

The export's codes hide most one-ulp differences in a clip value behind the fp16 rounding of the
scale, so the pieces are checked on their own here:

    $PYTHON test/quant_quantile.py gen DIR      DIR/q_in.ckpt (matrices) and DIR/conv_in.f32 (values)
    build/quant_tool quantiles DIR/q_in.ckpt DIR/q_out.ckpt
    build/quant_tool convert DIR/conv_in.f32 DIR/conv.f16 DIR/conv.bf16
    $PYTHON test/quant_quantile.py check DIR    compare with torch.quantile / .to(float16) / .to(bfloat16)

quant_tool quantiles writes, per 2-D tensor NAME and each p of PS below, NAME.<i> = the quantile of
|rows| at PS[i] (f32, one per row). Row lengths include 1 and 2, and the ps cover both branches of
torch's lerp (weight below and above 1/2).
"""
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "ref"))
from ckpt import read_ckpt, write_ckpt  # noqa: E402

PS = (0.999, 0.9995, 0.9999, 0.99999, 99.99984 / 100.0, 0.5, 0.25, 0.9, 0.3, 0.7, 0.0, 1.0)


def gen(d):
    g = torch.Generator().manual_seed(5)
    t = OrderedDict()
    for cols in (1, 2, 3, 7, 100, 128, 512, 1000, 1536):
        rows = max(8, 60000 // cols)
        w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g) * 2)
        w[0] = 0.0
        if cols > 3:
            w[1, :cols // 2] = 1.0  # repeated values
        t[f"m{cols}"] = w
    write_ckpt(os.path.join(d, "q_in.ckpt"), OrderedDict(), t)
    # values for the conversions: random bit patterns of finite floats, plus the edges of fp16/bf16
    rng = np.random.default_rng(6)
    bits = rng.integers(0, 2**32, size=400000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    near = (rng.standard_normal(200000) * np.exp(rng.uniform(-30, 12, 200000))).astype(np.float32)
    edges = np.array([65504, 65519.99, 65520, 65536, 6.1035156e-05, 6.1035153e-05, 5.9604645e-08, 2.9802322e-08,
                      2.9802326e-08, 1e-30, 0.0, -0.0, 3.3895314e38, 3.4028235e38, 1 + 2**-11, 1 + 3 * 2**-11],
                     dtype=np.float32)
    # exact halfway cases for fp16 (13 dropped bits = 0x1000) and bf16 (16 dropped bits = 0x8000)
    m = rng.integers(0, 2**23, size=20000, dtype=np.uint64).astype(np.uint32)
    e = rng.integers(100, 150, size=20000, dtype=np.uint64).astype(np.uint32) << 23
    half16 = ((m & ~np.uint32(0x1FFF)) | np.uint32(0x1000) | e).view(np.float32)
    halfbf = ((m & ~np.uint32(0xFFFF)) | np.uint32(0x8000) | e).view(np.float32)
    allx = np.concatenate([x, near, edges, -edges, half16, -halfbf, halfbf])
    allx.astype("<f4").tofile(os.path.join(d, "conv_in.f32"))


def check(d):
    _, t = read_ckpt(os.path.join(d, "q_in.ckpt"))
    _, out = read_ckpt(os.path.join(d, "q_out.ckpt"))
    bad = 0
    for name, w in t.items():
        a = w.abs()
        for i, p in enumerate(PS):
            ref = torch.quantile(a, p, dim=1)
            got = out[f"{name}.{i}"]
            ne = (ref.view(torch.int32) != got.view(torch.int32)).nonzero().reshape(-1)
            if len(ne):
                bad += 1
                k = ne[0].item()
                print(f"DIFF quantile {name} p={p}: {len(ne)} of {len(ref)} rows differ, row {k}: "
                      f"torch {ref[k].item()!r} ours {got[k].item()!r}")
    x = np.fromfile(os.path.join(d, "conv_in.f32"), dtype="<f4")
    h = np.fromfile(os.path.join(d, "conv.f16"), dtype="<u2")
    b = np.fromfile(os.path.join(d, "conv.bf16"), dtype="<u2")
    ref_h = torch.from_numpy(x.copy()).to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    with np.errstate(over="ignore"):
        ref_np = x.astype(np.float16).view(np.uint16)
    ref_b = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    for what, ref, got in (("fp16 vs torch", ref_h, h), ("fp16 vs numpy", ref_np, h), ("bf16 vs torch", ref_b, b)):
        ne = np.nonzero(ref != got)[0]
        if len(ne):
            bad += 1
            k = ne[0]
            print(f"DIFF {what}: {len(ne)} of {len(x)} differ, e.g. {x[k]!r}: expected {ref[k]:#06x} got {got[k]:#06x}")
    if bad:
        return 1
    print(f"identical: quantiles of {len(t)} matrices at {len(PS)} ps; {len(x)} fp16 and bf16 conversions")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("gen", "check"):
        print("usage: quant_quantile.py gen|check DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(gen(sys.argv[2]) or 0 if sys.argv[1] == "gen" else check(sys.argv[2]))
