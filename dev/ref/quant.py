"""quant.py: the reference export quantizer in PyTorch, the oracle for common/quant.h.

Written by us from the semantics of the record script's mixed_quantize_int6 / dequantize_mixed_int6
(with the int5 record's row-max formula for the MLP when MLP_QUANT_BITS=5), using the same torch
calls in the same order (torch.quantile, clamp_min, .to(float16), torch.round, ...), so that its
integer codes, fp16 scales, chosen percentiles and dequantized weights are what the reference
would produce on this machine. Per tensor, the first rule that matches:

    not floating point                  -> raw     kept as is
    numel <= 65536                      -> fp16    t.to(float16)
    name has a control pattern          -> fp32    t.float()
    MLP matrix and MLP_QUANT_BITS=5     -> int5    row max / 15 scales (fp16, at least 2^-14)
    MLP or attention matrix             -> int6    GPTQ-lite: best of 5 clip percentiles by MSE
    anything else                       -> int8    0.9999984-quantile clip per row

Note on exactness: torch.quantile's interpolation (lerp) is fused (fma) in torch's AVX2/AVX-512
CPU kernels and not in its "default" kernel, so a torch running without SIMD (or with
ATEN_CPU_CAPABILITY=default) gives some clip values one ulp apart; common/quant.h follows the
SIMD kernels. We print a warning when torch reports no AVX2.

    python3 dev/ref/quant.py IN.ckpt [--mlp-bits 5|6] [--dump CODES.ckpt] [--dequant OUT.ckpt] [-v]

--dump writes the codes as a checkpoint (the same layout `build/quant_tool dump` writes from an
artifact, so the two files can be compared byte for byte):
    config: the input's model options, then one entry "scheme.NAME" = raw|fp16|fp32|int8|int6|int5 per tensor
    tensors, in state_dict order:
        raw/fp16/fp32:  NAME          the stored copy (its dtype, f16, f32)
        int8/int6/int5: NAME.q        int8 codes, the tensor's shape
                        NAME.scale    f16 (rows,) for 2-D; one f16 () (int6/int5) or f32 () (int8) else
                        NAME.pct      int8 (), the chosen percentile index (int6 2-D only)
--dequant writes the dequantized weights in the input's dtypes (what load_state_dict would hold).
Tensors whose names contain '/' (training-state extras) are skipped, as the C++ side does.
"""
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ckpt import read_ckpt, write_ckpt  # noqa: E402

# The config entries a .ptz artifact keeps: the P_MODEL options of common/config.h's option table,
# in its order, so the artifact depends only on the weights and the model (not on RUN_ID,
# OUT_DIR, ...). test/test_usage.sh checks that the two lists agree.
ARTIFACT_CONFIG_KEYS = ["VOCAB_SIZE", "NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT",
                        "BIGRAM_VOCAB_SIZE", "BIGRAM_DIM", "XSA_LAST_N", "ROPE_DIMS", "ROPE_BASE",
                        "LN_SCALE", "VE_ENABLED", "VE_DIM", "VE_LAYERS", "LOGIT_SOFTCAP", "MLP_QUANT_BITS"]

CONTROL_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
                    "skip_weight", "skip_weights", "smear", "dtg_gate", "ve_layer_scales", "ve_shared.scale")
PASSTHROUGH_MAX_NUMEL = 65536
GPTQ_PERCENTILES = (0.9990, 0.9995, 0.9999, 0.99999, 1.0)
INT8_CLIP_Q = 99.99984 / 100.0


def quant_class(name):
    """The reference's _classify_param."""
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name or ".proj." in name:
        return "attn"
    return "other"


def scheme_for(name, t, mlp_bits):
    if not t.is_floating_point():
        return "raw"
    if t.numel() <= PASSTHROUGH_MAX_NUMEL:
        return "fp16"
    if any(p in name for p in CONTROL_PATTERNS):
        return "fp32"
    c = quant_class(name)
    if c == "mlp":
        return "int5" if mlp_bits == 5 else "int6"
    if c == "attn":
        return "int6"
    return "int8"


def quant_int6(t, verbose=False, name=""):
    """GPTQ-lite int6: returns (q int8, scale, percentile index or None)."""
    w = t.float()
    if w.ndim != 2:
        amax = w.abs().max().item()
        s = torch.tensor(amax / 31 if amax > 0 else 1.0, dtype=torch.float16)
        q = torch.clamp(torch.round(w / s.float()), -31, 31).to(torch.int8)
        return q, s, None
    best_q, best_s, best_i, best_err = None, None, None, float("inf")
    errs = []
    for i, p in enumerate(GPTQ_PERCENTILES):
        clip = torch.quantile(w.abs(), p, dim=1) if p < 1.0 else w.abs().amax(dim=1)
        s = (clip / 31).clamp_min(1.0 / 31).to(torch.float16)
        q = torch.clamp(torch.round(w / s.float()[:, None]), -31, 31).to(torch.int8)
        err = (w - q.float() * s.float()[:, None]).pow(2).mean().item()
        errs.append(err)
        if err < best_err:
            best_q, best_s, best_i, best_err = q, s, i, err
    if verbose:
        print(f"  {name}: mse per percentile {['%.9g' % e for e in errs]} -> index {best_i}", file=sys.stderr)
    return best_q, best_s, best_i


def quant_int5(t):
    """Row-max int5 (codes -16..15)."""
    w = t.float()
    if w.ndim != 2:
        amax = w.abs().max().item()
        s = torch.tensor(max(amax / 15, 1e-12), dtype=torch.float16)
        q = torch.clamp(torch.round(w / s.float()), -16, 15).to(torch.int8)
        return q, s
    rowmax = w.abs().amax(dim=1)
    s = (rowmax / 15).clamp_min(1e-12).to(torch.float16)
    # the script's clamp of the fp16 scales; torch 1.13 has no Half clamp_min on the CPU, and the
    # max taken through fp32 is the same value (2^-14 is exact in fp16)
    try:
        s = s.clamp_min(torch.finfo(torch.float16).tiny)
    except RuntimeError:
        s = s.float().clamp_min(torch.finfo(torch.float16).tiny).to(torch.float16)
    q = torch.clamp(torch.round(w / s.float()[:, None]), -16, 15).to(torch.int8)
    return q, s


def quant_int8(t):
    """int8 with a 0.9999984-quantile clip: per row for 2-D (fp16 scales), else one fp32 scale."""
    w = t.float()
    if w.ndim == 2:
        clip = torch.quantile(w.abs(), INT8_CLIP_Q, dim=1) if w.numel() else torch.zeros(w.shape[0])
        clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
        scale = (clip / 127).clamp_min(1.0 / 127)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
        return q, scale.to(torch.float16)
    clip = float(torch.quantile(w.abs().flatten(), INT8_CLIP_Q).item()) if w.numel() else 0.0
    scale = torch.tensor(clip / 127 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(w, -clip, clip) / scale), -127, 127).to(torch.int8)
    return q, scale


def quantize(tensors, mlp_bits, verbose=False):
    """-> OrderedDict name -> (scheme, payload) with payload a tensor (copies) or (q, scale, pct)."""
    out = OrderedDict()
    for name, t in tensors.items():
        if "/" in name:
            continue
        scheme = scheme_for(name, t, mlp_bits)
        if scheme == "raw":
            out[name] = (scheme, t)
        elif scheme == "fp16":
            out[name] = (scheme, t.to(torch.float16))
        elif scheme == "fp32":
            out[name] = (scheme, t.float())
        elif scheme == "int6":
            out[name] = (scheme, quant_int6(t, verbose, name))
        elif scheme == "int5":
            out[name] = (scheme, quant_int5(t) + (None,))
        else:
            out[name] = (scheme, quant_int8(t) + (None,))
    return out


def dequantize(quant, template):
    """The reference's dequantization, then the cast load_state_dict does into each template dtype."""
    out = OrderedDict()
    for name, (scheme, payload) in quant.items():
        dtype = template[name].dtype
        if scheme in ("raw", "fp16", "fp32"):
            t = payload
            if t.dtype == torch.float16 and dtype in (torch.float32, torch.bfloat16):
                t = t.to(dtype)
        else:
            q, s, _ = payload
            if s.ndim > 0:
                t = (q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))).to(dtype)
            else:
                t = (q.float() * float(s.item())).to(dtype)
        out[name] = t.to(dtype)
    return out


def dump_tensors(quant):
    cfg, ts = OrderedDict(), OrderedDict()
    for name, (scheme, payload) in quant.items():
        cfg["scheme." + name] = scheme
        if scheme in ("raw", "fp16", "fp32"):
            ts[name] = payload
        else:
            q, s, pct = payload
            ts[name + ".q"] = q
            ts[name + ".scale"] = s
            if pct is not None:
                ts[name + ".pct"] = torch.tensor(pct, dtype=torch.int8)
    return cfg, ts


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="reference export quantizer (see the module docstring)")
    ap.add_argument("ckpt")
    ap.add_argument("--mlp-bits", type=int, default=None, help="5 or 6 (default: the checkpoint's MLP_QUANT_BITS, else 5)")
    ap.add_argument("--dump", help="write the codes, scales and chosen percentiles as a .ckpt")
    ap.add_argument("--dequant", help="write the dequantized weights as a .ckpt")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the GPTQ-lite errors per candidate")
    args = ap.parse_args(argv)
    if "CPU capability usage: AVX" not in torch.__config__.show():
        print("warning: torch runs without AVX2/AVX-512 kernels: its quantile lerp is not fused, "
              "so clip values may differ from common/quant.h by one ulp", file=sys.stderr)
    try:
        config, tensors = read_ckpt(args.ckpt)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    bits = args.mlp_bits if args.mlp_bits is not None else int(config.get("MLP_QUANT_BITS", "5"))
    if bits not in (5, 6):
        print(f"error: MLP_QUANT_BITS={bits}: must be 5 or 6", file=sys.stderr)
        return 2
    quant = quantize(tensors, bits, args.verbose)
    # the artifact keeps only the model's options (the P_MODEL options of common/config.h, in table order)
    config = OrderedDict((k, config[k]) for k in ARTIFACT_CONFIG_KEYS if k in config)
    if args.dump:
        cfg, ts = dump_tensors(quant)
        write_ckpt(args.dump, OrderedDict(list(config.items()) + list(cfg.items())), ts)
    if args.dequant:
        write_ckpt(args.dequant, config, dequantize(quant, tensors))
    counts = OrderedDict()
    for scheme, _ in quant.values():
        counts[scheme] = counts.get(scheme, 0) + 1
    print("quantized %d tensors: %s" % (len(quant), " ".join(f"{k}={v}" for k, v in counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
