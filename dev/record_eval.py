"""record_eval.py: the record script's OWN evals on our weights, then variants that each change
one precision choice on its side, next to ./eval's numbers: finds where the sliding-window
eval's 2.8e-4 BPB difference against the record script comes from (docs/RESULTS.md).

  python3 dev/record_eval.py --record .carry/record/train_gpt.py --artifact final_model.ptz \\
      --data-path DIR --tokenizer FILE.model [--val-tokens 1048576] [--variants a,b,...] [--eval ./eval]

The record script (openai/parameter-golf, records/track_10min_16mb/
2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233/train_gpt.py) is NOT part of this repo:
give its path. It is imported as a module (its main() is not run); its Hyperparameters read the
environment at import, so the model's settings are exported from our file's config first.
FlashAttention 3 (flash_attn_interface) is replaced by PyTorch's SDPA, causal, GQA by repeating
the kv heads, in FA3's (B, T, H, D) layout. The model is built and cast as the script's main
builds its eval model (bf16, CastedLinear fp32, low-dim/control tensors fp32), loaded with our
dequantized weights (.ptz through build/quant_tool, or a .ckpt as is), and scored with its
eval_val on torch.compile(model) and its eval_val_sliding (which compiles forward_logits), under
its autocast, on the first --val-tokens tokens (cut to a multiple of EVAL_SEQ_LEN, as ./eval's
VAL_MAX_TOKENS cuts them).

Variants (each is the record's eval with ONE change; "=" in a column means that eval is
unchanged by the variant and not rerun):
  ref            as the record's main does it
  z_bf16         standard eval through forward_logits + eager cross-entropy (its sliding eval's
                 path, stride = seq_len, so each token once): softcapped logits rounded to bf16
  z_fp32         sliding eval with forward_logits returning fp32 (the softcap fused with the
                 upcast inside the compiled graph): softcapped logits not rounded
  rope_fp32      RoPE tables kept fp32 and the rotation done in fp32, rounded once to bf16
  ctrl_bf16      control/low-dim parameters (scales, mix, gains, skip weights, smear, scalar
                 scales) pre-rounded to bf16 values, as our kernels use them
  emulate_casts  torch._inductor.config.emulate_precision_casts = True (inductor keeps eager's
                 bf16 rounding between fused ops instead of eliding it)
  eager          no torch.compile at all (every op rounds to bf16 as eager autocast does)
  attn_fp32      attention in fp32 end to end (flash kernels, FA3's and ours, round the
                 softmax probabilities to bf16 for the P V product)
They run in this order; --time-budget skips the ones left. Ours: ./eval --artifact X --device
cuda, with and without EVAL_REF_ROUNDING=1, same tokens, eval settings from the record run.
Stride sweep (--strides, right after `ref`): the record's sliding eval as is and ours at other
strides; stride s scores positions seq-s..seq-1 of each window, so a difference that grows as s
shrinks depends on the position (RoPE, attention over long contexts), not on the logits.

--device cpu is a smoke mode for machines without a GPU (torch >= 1.13): the record's model in
fp32 (no autocast, no compile), variant `ref` only unless --variants is given, and ./eval --device
cpu; `ref` and ours should then agree to ~1e-6 (the same fp32 math), which checks the plumbing
(names, shapes, settings, windows). E.g. with a random tiny model (build/ckpt_tool random):
  --device cpu --val-tokens 4096 --set EVAL_SEQ_LEN=256 --set TRAIN_SEQ_LEN=256 --strides 128

Prints one line per result as it comes ("result <variant> standard:X sliding:Y time:Ts"), then
the table (its last two columns: record minus ours) and record minus ours by scored positions. Exit 1 with one "error: ..." line on bad input.
"""
import argparse
import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import types

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
import ckpt  # noqa: E402

# in the order they run (most telling and cheapest first: --time-budget skips from the end)
VARIANTS = ["ref", "z_bf16", "ctrl_bf16", "z_fp32", "eager", "rope_fp32", "emulate_casts", "attn_fp32"]


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# Stand-ins the record script needs on this machine


def attention_math(q, k, v, causal, scale=None):
    """Softmax attention written out, (B, H, T, D) layout, in the inputs' dtype."""
    s = (q @ k.transpose(-1, -2)) * (scale or q.size(-1) ** -0.5)
    if causal:
        T = q.size(-2)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def sdpa_flash_attn_func(q, k, v, causal=False, softmax_scale=None, **_):
    """flash_attn_interface.flash_attn_func on PyTorch SDPA: q (B, T, H, D), k and v (B, T, Hkv, D)
    with H a multiple of Hkv (query head h reads kv head h // (H / Hkv)); returns (B, T, H, D)."""
    H, Hkv = q.size(2), k.size(2)
    if H != Hkv:
        k = k.repeat_interleave(H // Hkv, dim=2)
        v = v.repeat_interleave(H // Hkv, dim=2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if hasattr(F, "scaled_dot_product_attention"):
        kw = {} if softmax_scale is None else {"scale": softmax_scale}
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
    else:  # torch < 2.0 (CPU smoke runs)
        y = attention_math(q, k, v, causal, softmax_scale)
    return y.transpose(1, 2)


def fp32_flash_attn_func(q, k, v, causal=False, softmax_scale=None, **_):
    """The same attention computed in fp32 end to end (P not rounded to bf16), output in q's dtype."""
    H, Hkv = q.size(2), k.size(2)
    k = k.repeat_interleave(H // Hkv, dim=2)
    v = v.repeat_interleave(H // Hkv, dim=2)
    y = attention_math(q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), causal,
                       softmax_scale)
    return y.transpose(1, 2).to(q.dtype)


def _rms_norm_old_torch(x, normalized_shape, weight=None, eps=None):
    """F.rms_norm for torch < 2.4 (CPU smoke runs only): eps defaults to the dtype's epsilon."""
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    dims = tuple(range(-len(normalized_shape), 0))
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    return y * weight if weight is not None else y


def install_shims():
    fa = types.ModuleType("flash_attn_interface")
    fa.flash_attn_func = sdpa_flash_attn_func
    sys.modules["flash_attn_interface"] = fa
    if not hasattr(F, "rms_norm"):
        F.rms_norm = _rms_norm_old_torch
    if not hasattr(torch, "compile"):
        torch.compile = lambda fn=None, **_: fn


def load_record(path, config, data_path, tokenizer, overrides):
    """Imports the record script with its Hyperparameters reading our model's settings (then
    the --set overrides)."""
    if not os.path.isfile(path):
        die(f"{path}: no such file (the record script; see --help)")
    src = open(path, encoding="utf-8").read()
    wanted = set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', src))
    for key, value in config.items():
        if key in wanted:
            os.environ[key] = value
    os.environ.update(overrides)
    os.environ["DATA_PATH"] = data_path
    os.environ["TOKENIZER_PATH"] = tokenizer
    install_shims()
    spec = importlib.util.spec_from_file_location("record_train_gpt", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("Hyperparameters", "GPT", "CastedLinear", "Rotary", "apply_rotary_emb", "eval_val", "eval_val_sliding",
                 "restore_low_dim_params_to_fp32", "load_validation_tokens", "build_sentencepiece_luts"):
        if not hasattr(mod, name):
            die(f"{path}: has no {name} (not the 1.1233 record script?)")
    return mod


def read_weights(args):
    """(config, state_dict) of our file; a .ptz is dequantized with build/quant_tool first."""
    path = args.artifact or args.ckpt
    if not os.path.isfile(path):
        die(f"{path}: no such file")
    if args.artifact:
        tool = os.path.join(ROOT, "build", "quant_tool")
        if not os.path.isfile(tool):
            r = subprocess.run(["make", "-s", "-C", ROOT, "build/quant_tool"], capture_output=True, text=True)
            if r.returncode != 0:
                die(f"make build/quant_tool failed: {r.stderr.strip().splitlines()[-1:]}")
        out = os.path.join(tempfile.mkdtemp(prefix="record_eval_"), "deq.ckpt")
        r = subprocess.run([tool, "dequantize", path, out], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"{path}: quant_tool dequantize failed: {(r.stderr or r.stdout).strip()}")
        path = out
    try:
        return ckpt.read_ckpt(path)
    except ValueError as e:
        die(str(e))


def build_model(R, h, sd, device, fp32):
    """The record main's eval model: bf16, CastedLinear fp32, low-dim/control tensors fp32."""
    m = R.GPT(vocab_size=h.vocab_size, num_layers=h.num_layers, model_dim=h.model_dim, num_heads=h.num_heads,
              num_kv_heads=h.num_kv_heads, mlp_mult=h.mlp_mult, tie_embeddings=h.tie_embeddings,
              tied_embed_init_std=h.tied_embed_init_std, logit_softcap=h.logit_softcap, rope_base=h.rope_base,
              qk_gain_init=h.qk_gain_init, mtp_num_heads=0, mtp_loss_weight=0.0,
              bigram_vocab_size=h.bigram_vocab_size, bigram_dim=h.bigram_dim, xsa_last_n=h.xsa_last_n,
              rope_dims=h.rope_dims, ln_scale=h.ln_scale, dtg=h.dtg_enabled, ve_enabled=h.ve_enabled,
              ve_dim=h.ve_dim, ve_layers=h.ve_layers).to(device).bfloat16()
    for mod in m.modules():
        if isinstance(mod, R.CastedLinear):
            mod.float()
    R.restore_low_dim_params_to_fp32(m)
    try:
        m.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        die(f"our weights do not fit the record's GPT: {str(e).splitlines()[0]} {str(e).splitlines()[1:3]}")
    if fp32:
        m.float()
    return m


# ----------------------------------------------------------------------------------------------
# Variants: each a context in which the record's evals run with one change


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def rope_fp32(R):
    rot_fwd, apply = R.Rotary.forward, R.apply_rotary_emb

    def fwd(self, seq_len, device, dtype):
        return rot_fwd(self, seq_len, device, torch.float32)

    def rot(x, cos, sin, rope_dims=0):
        return apply(x.float(), cos, sin, rope_dims).to(x.dtype)

    with patched(R.Rotary, "forward", fwd), patched(R, "apply_rotary_emb", rot):
        yield


@contextlib.contextmanager
def ctrl_bf16(R, model):
    saved = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = p.ndim < 2 or any(pat in name for pat in R.CONTROL_TENSOR_NAME_PATTERNS)
            if low and p.dtype == torch.float32:
                saved[name] = p.detach().clone()
                p.copy_(p.bfloat16().float())
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.copy_(saved[name])


@contextlib.contextmanager
def logits_fp32(R):
    fl = R.GPT.forward_logits

    def fwd(self, input_ids):
        return fl(self, input_ids).float()

    with patched(R.GPT, "forward_logits", fwd):
        yield


@contextlib.contextmanager
def emulate_casts():
    import torch._inductor.config as ic
    if not hasattr(ic, "emulate_precision_casts"):
        raise RuntimeError("this torch has no torch._inductor.config.emulate_precision_casts")
    with patched(ic, "emulate_precision_casts", True):
        yield


# Variants that change code (not only values or the call) need dynamo's cache cleared before them
# (or they would reuse the unpatched compiled code) and after them (or the next would reuse theirs).
CODE_PATCHES = {"z_fp32", "rope_fp32", "emulate_casts", "eager", "attn_fp32"}


def reset_compiled():
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


def run_variant(name, R, h, model, val, luts, device, stride, seq):
    """(standard bpb or None, sliding bpb or None); None = unchanged by the variant, not rerun."""
    if name in CODE_PATCHES:
        reset_compiled()
    try:
        return _run_variant(name, R, h, model, val, luts, device, stride, seq)
    finally:
        if name in CODE_PATCHES:
            reset_compiled()


def ref_sliding(R, h, model, val, luts, device, stride, seq):
    return R.eval_val_sliding(h, model, 0, 1, device, val, *luts, stride=stride, eval_seq_len=seq)[1]


def _run_variant(name, R, h, model, val, luts, device, stride, seq):
    def std():
        compiled = torch.compile(model, dynamic=False, fullgraph=True)
        return R.eval_val(h, compiled, 0, 1, device, 8, val, *luts, eval_seq_len=seq)[1]

    def sliding(stride_=stride):
        return ref_sliding(R, h, model, val, luts, device, stride_, seq)

    if name == "ref":
        return std(), sliding()
    if name == "z_bf16":
        return sliding(seq), None
    if name == "z_fp32":
        with logits_fp32(R):
            return None, sliding()
    if name == "rope_fp32":
        with rope_fp32(R):
            return std(), sliding()
    if name == "ctrl_bf16":
        with ctrl_bf16(R, model):
            return std(), sliding()
    if name == "emulate_casts":
        with emulate_casts():
            return std(), sliding()
    if name == "eager":
        with patched(torch, "compile", lambda fn=None, **_: fn):
            return std(), sliding()
    if name == "attn_fp32":
        with patched(R, "flash_attn_3_func", fp32_flash_attn_func):
            return std(), sliding()
    raise ValueError(name)


# ----------------------------------------------------------------------------------------------
# Ours


def run_ours(args, h, seq, n_tokens, env_extra):
    """./eval's (standard, sliding) bpb on the first n_tokens val tokens, with the record run's
    eval settings, env_extra added."""
    env = dict(os.environ, DATA_PATH=args.data_path, TOKENIZER_PATH=args.tokenizer, VAL_MAX_TOKENS=str(n_tokens),
               EVAL_SEQ_LEN=str(seq), EVAL_STRIDE=str(h.eval_stride), VAL_BATCH_SIZE=str(h.val_batch_size),
               EVAL_BATCH_SEQS="32")  # eval_val_sliding's batch_seqs
    env.update(env_extra)
    what = ["--artifact", args.artifact] if args.artifact else ["--checkpoint", args.ckpt]
    cmd = [args.eval] + what + ["--device", args.device]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    std = re.search(r"val_bpb_exact:([0-9.]+)", r.stdout)
    sl = re.search(r"sliding_window_exact .*val_bpb:([0-9.]+)", r.stdout)
    if r.returncode != 0 or not std:
        die(f"{' '.join(cmd)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
    return float(std.group(1)), float(sl.group(1)) if sl else None


def fmt(x):
    return f"{x:.8f}" if x is not None else "="


def main(argv):
    ap = argparse.ArgumentParser(prog="record_eval.py", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--record", required=True, help="path of the record's train_gpt.py (not in this repo)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--artifact", help="our .ptz (dequantized with build/quant_tool)")
    g.add_argument("--ckpt", help="our .ckpt (e.g. already dequantized weights)")
    ap.add_argument("--data-path", required=True, help="directory with fineweb_val_*.bin")
    ap.add_argument("--tokenizer", required=True, help="the SentencePiece .model")
    ap.add_argument("--val-tokens", type=int, default=0, help="score only the first N val tokens (0 = all)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {VARIANTS}")
    ap.add_argument("--eval", default=os.path.join(ROOT, "eval"), help="our eval binary ('' = skip ours)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--strides", default="1024,256",
                    help="also the sliding eval at these strides, record (as is) and ours: how the difference "
                         "depends on the scored positions (stride s scores positions seq-s..seq-1); '' = none")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the file for both sides (e.g. EVAL_SEQ_LEN=256 for a quick CPU smoke run)")
    ap.add_argument("--time-budget", type=float, default=0, help="skip the variants left after this many seconds (0 = none)")
    args = ap.parse_args(argv)
    t_start = time.time()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            die(f"--variants: unknown variant {v!r} (known: {','.join(VARIANTS)})")
    cpu = args.device == "cpu"
    if cpu:  # eager fp32 only: the variants that need inductor or autocast mean nothing here
        variants = [v for v in variants if v not in ("emulate_casts",)] if "--variants" in " ".join(argv) else ["ref"]
        # no autocast on the CPU (the record asks for CUDA's, which old torch fails on without CUDA)
        torch.autocast = lambda *a, **kw: contextlib.nullcontext()
    elif not torch.cuda.is_available():
        die("--device cuda: torch sees no GPU (use --device cpu for the smoke mode)")
    if args.val_tokens < 0:
        die("--val-tokens must be >= 0")

    overrides = {}
    for item in args.set:
        if "=" not in item:
            die(f"--set {item}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        overrides[k] = v
    os.environ.update(overrides)  # ours reads them from the environment too
    config, sd = read_weights(args)
    R = load_record(args.record, config, args.data_path, args.tokenizer, overrides)
    h = R.Hyperparameters()
    device = torch.device(args.device)
    seq = h.eval_seq_len if h.eval_seq_len > 0 else h.train_seq_len
    stride = h.eval_stride
    if not cpu:  # as the record's main sets them (SDPA then runs its flash kernel, the closest to FA3)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    luts = R.build_sentencepiece_luts(sp, h.vocab_size, device)
    try:
        val = R.load_validation_tokens(h.val_files, max(h.train_seq_len, seq))
    except TypeError:  # torch < 2.3 has no uint16 tensors: the same tokens and cut through dev/ref
        import eval as ref_eval
        val = ref_eval.load_val_tokens(args.data_path, max(h.train_seq_len, seq))
    n = val.numel() - 1
    if args.val_tokens and args.val_tokens < n:
        n = args.val_tokens // seq * seq
        if n <= 0:
            die(f"--val-tokens {args.val_tokens} is shorter than one sequence of {seq}")
        val = val[:n + 1]
    model = build_model(R, h, sd, device, fp32=cpu)
    say(f"record_eval: torch {torch.__version__} device:{args.device} val_tokens:{n} seq_len:{seq} stride:{stride} "
        f"layers:{h.num_layers} dim:{h.model_dim} bigram:{h.bigram_vocab_size} ve:{int(h.ve_enabled)} "
        f"params:{sum(p.numel() for p in model.parameters())}")

    rows = []  # (name, standard, sliding)
    if args.eval:
        for name, extra in [("ours", {}), ("ours_ref_rounding", {"EVAL_REF_ROUNDING": "1"})]:
            t0 = time.time()
            s, w = run_ours(args, h, seq, n, extra)
            rows.append((name, s, w))
            say(f"result {name} standard:{fmt(s)} sliding:{fmt(w)} time:{time.time() - t0:.0f}s")
    # the stride sweep: the record as is (right after `ref`, reusing its compiled forward_logits)
    # against ours
    strides = [int(x) for x in args.strides.split(",") if x]
    for st in strides:
        if not 0 < st < seq:
            die(f"--strides: {st} is not in 1..{seq - 1}")
    sweep = []  # (stride, record, ours)

    def run_sweep():
        for st in strides:
            if args.time_budget and time.time() - t_start > args.time_budget:
                say(f"result stride{st} skipped (past --time-budget {args.time_budget:.0f}s)")
                continue
            t0 = time.time()
            r = ref_sliding(R, h, model, val, luts, device, st, seq)
            o = run_ours(args, h, seq, n, {"EVAL_STRIDE": str(st)})[1] if args.eval else None
            sweep.append((st, r, o))
            say(f"result stride{st} record_sliding:{fmt(r)} ours_sliding:{fmt(o)} time:{time.time() - t0:.0f}s")

    for name in variants:
        if args.time_budget and time.time() - t_start > args.time_budget:
            say(f"result {name} skipped (past --time-budget {args.time_budget:.0f}s)")
            continue
        t0 = time.time()
        try:
            s, w = run_variant(name, R, h, model, val, luts, device, stride, seq)
        except Exception as e:  # one broken variant must not cost the others
            if os.environ.get("RECORD_EVAL_TRACE"):
                raise
            say(f"result {name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        rows.append((name, s, w))
        say(f"result {name} standard:{fmt(s)} sliding:{fmt(w)} time:{time.time() - t0:.0f}s")
        if name == "ref":
            run_sweep()
    if "ref" not in variants:
        run_sweep()

    ours = next((r for r in rows if r[0] == "ours"), None)
    ref = next((r for r in rows if r[0] == "ref"), None)
    say("")
    say(f"{'variant':<20} {'standard':>12} {'sliding':>12} {'std-ours':>10} {'slide-ours':>10}")
    for name, s, w in rows:
        # "=" columns take the ref's value for the deltas (the variant does not change that eval)
        s_eff = s if s is not None else (ref[1] if ref else None)
        w_eff = w if w is not None else (ref[2] if ref else None)
        ds = f"{s_eff - ours[1]:+.2e}" if ours and s_eff is not None else "-"
        dw = f"{w_eff - ours[2]:+.2e}" if ours and w_eff is not None and ours[2] is not None else "-"
        say(f"{name:<20} {fmt(s):>12} {fmt(w):>12} {ds:>10} {dw:>10}")
    if sweep or (ours and ref):
        say("")
        say("record - ours by scored positions (standard: all positions 0..seq-1; stride s: the last s);")
        say("on the GPU both sides round the softcapped logits to bf16 in every line here")
        zb = next((r for r in rows if r[0] == "z_bf16"), None)
        if ours and zb:
            say(f"  standard (0..{seq - 1}), record's through forward_logits (z_bf16): {zb[1] - ours[1]:+.2e}")
        for st, r, o in sweep:
            if o is not None:
                say(f"  stride {st:>4} ({seq - st}..{seq - 1}): {r - o:+.2e}")
        if ours and ref and ours[2] is not None:
            say(f"  stride {stride:>4} ({seq - stride}..{seq - 1}): {ref[2] - ours[2]:+.2e}")
    say(f"total time: {time.time() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
