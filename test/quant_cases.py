"""quant_cases.py: a checkpoint with a tensor for every corner of the export policy.

    $PYTHON test/quant_cases.py OUT.ckpt --mlp-bits 5|6

Names pick the class (the reference's _classify_param: tok_emb -> embed, .mlp. -> mlp, .attn. or
.proj. -> attn, else other) and the control patterns; sizes above 65,536 elements get quantized.
Inside: rows of zeros, constant rows, huge outliers, heavy tails, rows wide enough that GPTQ-lite's
percentile choice matters, values exactly at (k + 1/2) * scale (round-half-even ties), bf16 and f16
tables, 1-D / 3-D tensors (the per-tensor branches, including a zero fp16 scale), fp16 overflow
and subnormals in the passthrough, non-float tensors, and a training-state extra ('/' in the
name) that the export skips.
"""
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "ref"))
from ckpt import write_ckpt  # noqa: E402


def rows_with_scales(g, rows, cols, lo, hi):
    """N(0, 1) rows scaled by a log-uniform std in [lo, hi]."""
    std = torch.exp(torch.empty(rows, 1).uniform_(float(torch.log(torch.tensor(lo))), float(torch.log(torch.tensor(hi))), generator=g))
    return torch.randn(rows, cols, generator=g) * std


def heavy_tailed(g, rows, cols, scale):
    """Student-t-like rows (normal / sqrt(chi2 / 2)): many large outliers."""
    z = torch.randn(rows, cols, generator=g)
    chi = (torch.randn(rows, cols, generator=g) ** 2 + torch.randn(rows, cols, generator=g) ** 2) / 2
    return z / torch.sqrt(chi + 1e-3) * scale


def tie_row(cols, s, kmax):
    """Values exactly at (k + 1/2) * s for k in -kmax..kmax-1, repeated; exact in fp32 for fp16 s."""
    ks = torch.arange(-kmax, kmax, dtype=torch.float64)
    vals = ((ks + 0.5) * s).repeat(cols // len(ks) + 1)[:cols]
    return vals.float()


def main(argv):
    out, bits = argv[0], int(argv[argv.index("--mlp-bits") + 1]) if "--mlp-bits" in argv else 5
    g = torch.Generator().manual_seed(20240520 + bits)
    t = OrderedDict()
    s31 = float(torch.tensor(1.0 / 31).to(torch.float16).float())  # the clamped int6 scale

    # int6 GPTQ-lite: wide rows (percentile choice matters) ...
    w = rows_with_scales(g, 128, 600, 0.3, 4.0)
    w[0] = 0.0                                   # a row of zeros
    w[1, 17] = 1.0e4                             # one huge outlier
    w[2] = 0.25                                  # a constant row
    w[3] = tie_row(600, s31, 31)                 # exact ties at the clamped scale
    w[4, :] = -2.5                               # constant negative, above 1
    t["blocks.0.attn.c_q.weight"] = w
    t["blocks.0.attn.c_k.weight"] = heavy_tailed(g, 110, 640, 0.7)
    t["blocks.0.attn.c_v.weight"] = torch.randn(130, 520, generator=g) * 0.05  # all rows clamp to 1/31: exact ties of the 5 candidates
    w = rows_with_scales(g, 96, 700, 1.0, 30.0)
    w[5, :3] = torch.tensor([900.0, -900.0, 450.0])
    t["blocks.0.attn.proj.weight"] = w
    t["bigram.proj.weight"] = heavy_tailed(g, 160, 512, 2.0)    # '.proj.' -> attn class
    t["blocks.3.attn.c_q.weight"] = torch.randn(70, 1000, generator=g) * 1.5  # one more GPTQ-lite case

    # MLP: int5 (bits 5) or int6 (bits 6)
    w = rows_with_scales(g, 300, 256, 0.01, 3.0)
    w[0] = 0.0                                   # zero row: the 2^-14 floor of the int5 scale
    w[1] = torch.randn(256, generator=g) * 1e-6  # scale below fp16's normals
    s0 = float(torch.tensor(0.01).to(torch.float16).float())
    w[2] = tie_row(256, s0, 15)
    w[2, 0] = 15 * s0                            # row max = 15 * s0: scale exactly s0, ties at k+1/2
    w[3, 5] = 5.0e4                              # big but the scale stays finite in fp16
    t["blocks.0.mlp.fc.weight"] = w
    t["blocks.0.mlp.proj.weight"] = heavy_tailed(g, 256, 300, 0.05)
    t["blocks.2.mlp.fc.weight"] = (torch.randn(300, 256, generator=g) * 0.2).to(torch.float16)  # f16 original

    # int8: embeddings and "other"
    w = rows_with_scales(g, 600, 128, 0.01, 3.0)
    w[0] = 0.0
    w[1, 3] = 300.0
    w[2] = tie_row(128, 1.0 / 127, 63)
    t["tok_emb.weight"] = w.to(torch.bfloat16)
    w = heavy_tailed(g, 1000, 80, 0.5)
    w[7] = 0.0
    t["bigram.embed.weight"] = w.to(torch.bfloat16)
    t["ve_shared.embed.weight"] = (rows_with_scales(g, 512, 160, 0.05, 5.0)).to(torch.float16)
    t["lm_head.weight"] = rows_with_scales(g, 100, 1100, 0.5, 2.0)  # embed class in f32

    # control tensors above 65,536 elements: fp32 copies
    t["blocks.0.resid_mix"] = torch.randn(2, 40000, generator=g)
    t["skip_weights"] = torch.randn(3, 30000, generator=g).to(torch.bfloat16)

    # small tensors: fp16 copies
    t["blocks.0.attn_scale"] = torch.randn(512, generator=g)
    t["smear.gate"] = torch.tensor([1e5, -7e4, 65504.0, 65520.0, 1e-6, -3e-8, 2.9e-8, 6.1e-5, -0.0, 0.0, 1.0 / 3, 0.1])
    t["bigram.scale"] = torch.tensor(0.05)
    t["small.bf16"] = (torch.randn(100, generator=g) * 10).to(torch.bfloat16)
    t["small.f16"] = torch.randn(64, generator=g).to(torch.float16)
    t["empty"] = torch.zeros(0, 5)
    t["blocks.1.mlp.fc.small"] = torch.randn(256, 256, generator=g)  # exactly 65,536: still a copy

    # not float: kept as they are
    t["step"] = torch.tensor([3, -1, 2**40], dtype=torch.int64)
    t["big.int32"] = torch.randint(-2**31, 2**31 - 1, (70000,), generator=g, dtype=torch.int64).to(torch.int32)
    t["big.int8"] = torch.randint(-128, 128, (70000,), generator=g, dtype=torch.int64).to(torch.int8)

    # other ranks: one scale for the tensor
    t["blocks.1.attn.vec"] = torch.randn(70000, generator=g) * 0.7
    t["blocks.1.mlp.vec"] = heavy_tailed(g, 1, 70000, 0.3).reshape(70000)
    t["blocks.1.mlp.tiny"] = torch.randn(70000, generator=g) * 1e-9   # fp16 scale 0: 0/0 codes
    t["blocks.2.attn.tiny"] = torch.randn(70000, generator=g) * 1e-9
    t["blocks.2.attn.cube"] = torch.randn(20, 40, 100, generator=g)
    t["cube.weight"] = heavy_tailed(g, 40, 2000, 1.0).reshape(40, 40, 50)
    t["vec.bf16"] = (torch.randn(66000, generator=g) * 3).to(torch.bfloat16)

    # a training-state extra: not part of the export
    t["opt/blocks.0.attn.c_q.weight.m"] = torch.randn(4, 4, generator=g)

    config = OrderedDict([("NUM_LAYERS", "4"), ("MODEL_DIM", "512"), ("MLP_QUANT_BITS", str(bits))])
    write_ckpt(out, config, t)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
