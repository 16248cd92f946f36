"""convert_checkpoint.py: PyTorch state_dict (.pt) <-> our checkpoint format (.ckpt).

  python3 dev/convert_checkpoint.py pt2ckpt IN.pt OUT.ckpt [--ve-layers 9,10] [--xsa-last-n 4]
        [--rope-dims 16] [--rope-base 10000] [--ln-scale 1] [--qk-gain-init 1.5]
        [--logit-softcap 30] [--tied-embed-init-std 0.005] [--mlp-quant-bits 6]
        [--set KEY=VALUE ...]
      IN.pt is what the reference writes as final_model.pt (torch.save of the state_dict).
      The model config is inferred from the tensor shapes:
        NUM_LAYERS        1 + the largest N of blocks.N.*
        VOCAB_SIZE, MODEL_DIM             tok_emb.weight (V, D)
        NUM_HEADS         len(blocks.0.attn.q_gain)
        NUM_KV_HEADS      rows of blocks.0.attn.c_k.weight / head_dim (head_dim = D / H)
        MLP_MULT          rows of blocks.0.mlp.fc.weight / D
        BIGRAM_VOCAB_SIZE, BIGRAM_DIM     bigram.embed.weight (0 when there is no bigram)
        VE_ENABLED, VE_DIM                ve_shared.embed.weight (VE_ENABLED=0 when absent)
      and the rest (not visible in shapes) comes from the flags, whose defaults are the
      reference's. Every tensor is then checked against the config's tensor list (names,
      shapes) and written in state_dict order (the reference's order; a .pt in another order is
      reordered), dtypes and values unchanged.

  python3 dev/convert_checkpoint.py ckpt2pt IN.ckpt OUT.pt
      writes back an OrderedDict state_dict (same names, order, dtypes, values), loadable with
      torch.load and GPT.load_state_dict.

Errors print one line "error: <file>: <problem>" and exit 1 (bad input) or 2 (bad usage).
"""
import argparse
import os
import re
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import ckpt  # noqa: E402
import config as C  # noqa: E402
import model as M  # noqa: E402

# flag -> config key for the settings that the shapes do not show
FLAG_KEYS = [("ve_layers", "VE_LAYERS"), ("xsa_last_n", "XSA_LAST_N"), ("rope_dims", "ROPE_DIMS"),
             ("rope_base", "ROPE_BASE"), ("ln_scale", "LN_SCALE"), ("qk_gain_init", "QK_GAIN_INIT"),
             ("logit_softcap", "LOGIT_SOFTCAP"), ("tied_embed_init_std", "TIED_EMBED_INIT_STD"),
             ("mlp_quant_bits", "MLP_QUANT_BITS")]


def _shape(sd, name, path):
    if name not in sd:
        raise ValueError(f"{path}: missing tensor {name!r} (needed to infer the model config)")
    return tuple(sd[name].shape)


def _num_text(x):
    """3.0 -> '3', 2.5 -> '2.5' (how a person would set the env var)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def infer_config(sd, path, flags):
    """The model config (str -> str) of a state_dict, from its shapes plus the flags."""
    layers = [int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", n) for n in sd) if m]
    if not layers:
        raise ValueError(f"{path}: no blocks.N.* tensors: not a GPT state_dict")
    V, D = _shape(sd, "tok_emb.weight", path)
    H = _shape(sd, "blocks.0.attn.q_gain", path)[0]
    if H == 0 or D % H:
        raise ValueError(f"{path}: MODEL_DIM={D} is not divisible by NUM_HEADS={H} (from q_gain)")
    hd = D // H
    kv_rows = _shape(sd, "blocks.0.attn.c_k.weight", path)[0]
    if kv_rows % hd:
        raise ValueError(f"{path}: c_k has {kv_rows} rows, not a multiple of head_dim={hd}")
    hidden = _shape(sd, "blocks.0.mlp.fc.weight", path)[0]
    cfg = dict(C.DEFAULTS)
    cfg.update(VOCAB_SIZE=str(V), MODEL_DIM=str(D), NUM_LAYERS=str(max(layers) + 1), NUM_HEADS=str(H),
               NUM_KV_HEADS=str(kv_rows // hd), MLP_MULT=_num_text(hidden / D))
    if "bigram.embed.weight" in sd:
        B, BD = sd["bigram.embed.weight"].shape
        cfg.update(BIGRAM_VOCAB_SIZE=str(B), BIGRAM_DIM=str(BD))
    else:
        cfg["BIGRAM_VOCAB_SIZE"] = "0"
    for flag, key in FLAG_KEYS:
        cfg[key] = str(getattr(flags, flag))
    if "ve_shared.embed.weight" in sd:
        cfg.update(VE_ENABLED="1", VE_DIM=str(sd["ve_shared.embed.weight"].shape[1]))
        n_scales = sum(1 for n in sd if n.startswith("ve_layer_scales."))
        n_layers = len(C.ve_layers(cfg))
        if n_scales != n_layers:
            raise ValueError(f"{path}: {n_scales} ve_layer_scales tensors but --ve-layers "
                             f"{cfg['VE_LAYERS']} names {n_layers} layers")
    else:
        cfg["VE_ENABLED"] = "0"
    extra = C.parse_assignments(flags.set)
    cfg.update(extra)
    if int(float(cfg["MLP_MULT"]) * D) != hidden:
        raise ValueError(f"{path}: fc has {hidden} rows, not int(MLP_MULT * {D}) for MLP_MULT={cfg['MLP_MULT']}")
    return {k: cfg[k] for k in C.MODEL_KEYS + [k for k in extra if k not in C.MODEL_KEYS]}


def canonical(cfg, sd, path):
    """sd's tensors in the config's state_dict order, after checking names and shapes."""
    M.check_state_dict(cfg, sd, path, check_order=False)
    out = OrderedDict()
    for name, _, _ in M.expected_tensors(cfg):
        t = sd[name]
        if t.dtype not in ckpt.DTYPE_CODE:
            raise ValueError(f"{path}: tensor {name} has dtype {t.dtype}, which the format cannot store")
        out[name] = t.detach().to("cpu").contiguous()
    return out


def load_pt(path):
    try:
        obj = torch.load(path, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file")
    except Exception as e:  # pickle / zip errors: one line is enough
        raise ValueError(f"{path}: not a torch.save file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state_dict (a dict of name -> tensor)")
    return obj


def pt2ckpt(args):
    sd = load_pt(args.input)
    cfg = infer_config(sd, args.input, args)
    tensors = canonical(cfg, sd, args.input)
    ckpt.write_ckpt(args.output, cfg, tensors)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.output}: {len(tensors)} tensors, {n} parameters, "
          + " ".join(f"{k}={cfg[k]}" for k in ("NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS",
                                                "MLP_MULT", "BIGRAM_VOCAB_SIZE", "VE_ENABLED")))


def ckpt2pt(args):
    cfg, tensors = ckpt.read_ckpt(args.input)
    M.check_state_dict({**C.DEFAULTS, **cfg}, tensors, args.input)
    torch.save(OrderedDict(tensors), args.output)
    print(f"wrote {args.output}: {len(tensors)} tensors")


def main(argv):
    ap = argparse.ArgumentParser(prog="convert_checkpoint.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pt2ckpt", help="state_dict .pt -> .ckpt")
    p.add_argument("input")
    p.add_argument("output")
    for flag, key in FLAG_KEYS:
        p.add_argument("--" + flag.replace("_", "-"), default=C.DEFAULTS[key],
                       help=f"{key} (default {C.DEFAULTS[key]})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key to record (or override)")
    p = sub.add_parser("ckpt2pt", help=".ckpt -> state_dict .pt")
    p.add_argument("input")
    p.add_argument("output")
    args = ap.parse_args(argv)
    def run():
        (pt2ckpt if args.cmd == "pt2ckpt" else ckpt2pt)(args)
    return C.cli_run(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
