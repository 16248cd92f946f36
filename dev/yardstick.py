"""yardstick.py: the PyTorch yardstick of dev/bench.sh (issue [F]): our PyTorch twin (dev/ref) trained
the way the public record script trains it, timed on the same GPU and data as ./train_gpt.

  python3 dev/yardstick.py --data-path DIR [--steps 20] [--warmup 5] [--profile-steps 2]
        [--eval-tokens 1048576] [--sdpa auto|flash|cudnn|efficient|math] [--gqa repeat|native]
        [--device cuda|cpu] [--no-compile] [--set KEY=VALUE ...]

How it trains (the record script's way, written here from its description, not copied):
  - the model of dev/ref/model.py (seed preset unless --set says otherwise), bf16 mode: fp32
    linear weights and control tensors, bf16 embedding tables, under bf16 autocast;
  - torch.compile(model, fullgraph=True, dynamic=False); attention is F.scaled_dot_product_attention
    (causal; GQA by repeating the kv heads, or --gqa native = enable_gqa), in place of the record's
    FlashAttention 3; the RoPE tables are computed once before compiling;
  - Muon (momentum, nesterov, torch.compile'd bf16 Newton-Schulz, shape scale, decoupled weight
    decay) on the matrices, fused torch.optim.AdamW on the embeddings and the scalars, global
    grad-norm clipping, an fp32 EMA of every parameter after each step (foreach ops);
  - 786432 tokens per step as 8 micro-steps of 48 x 2048 on one GPU, from the train shards in the
    reference's order (dev/ref/train.py's stream; the same order as ./train_gpt), copied to the
    GPU from pinned memory without blocking;
  - the LR multiplier stays 1 (no warmdown) and QAT stays off, as dev/bench.sh runs ./train_gpt
    (WARMDOWN_ITERS=0, LATE_QAT_THRESHOLD=0): the same work per step on both sides.
W warm-up steps (compilation, autotuning), then S timed steps between two CUDA events with no
host sync in between (the losses are read after), so PyTorch's launch overhead overlaps the GPU
as well as it can. Then --profile-steps more steps under torch.profiler: kernels of the
forward/backward micro-steps are sorted into the families of ./train_gpt's PROFILE table by
name (family_of), the optimizer phase is profiled on its own and counts whole as
"optimizer+weights"; "gaps" is the timed step minus all kernel time.

The sliding-window eval yardstick (--eval-tokens N, 0 = skip): the first N val tokens (cut to whole
EVAL_SEQ_LEN windows, as ./eval's VAL_MAX_TOKENS cuts them), windows of EVAL_SEQ_LEN every
EVAL_STRIDE tokens (dev/ref/eval.py's sliding_windows, as the reference), EVAL_BATCH_SEQS windows
per torch.compile'd forward_logits call (the last batch padded so nothing recompiles), fp32
cross-entropy of the scored positions accumulated on the GPU; one warm-up batch (compile) off
the clock. Prints scored tokens per second.

Output (grep-able; dev/bench.sh parses these):
  yardstick_perf: steps:S step_avg:Xms tok/s:Y model_TFLOP/s:Z ceiling:P% of 790 flops_per_token:F
                  peak_allocated:AGiB peak_reserved:RGiB device_in_use:UGiB
  yardstick_profile: <family> ms/step:X ms/micro:Y share:Z% calls/step:N
  yardstick_sliding: windows:W tokens_scored:N time:Ts scored_tok/s:R val_loss:L
The model FLOPs per token are common/model.h's formula (flops_per_token here, checked against
./train_gpt --dry-run by test/test_bench.sh). --device cpu (tiny configs, torch >= 1.13, no
compile when torch has none) checks the plumbing; no profile there (kernel families need CUDA).
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import config as C  # noqa: E402
import eval as E  # noqa: E402
import model as M  # noqa: E402
import train as T  # noqa: E402

H200_BF16_TFLOPS = 790.0  # common/model.h
# the families of common/cuda_utils.cuh's prof_family_name, in its order
FAMILIES = ["attention fwd", "attention bwd", "GEMMs (cuBLASLt)", "memory-bound layers", "loss (head CE)",
            "optimizer+weights", "communication", "gaps"]


def say(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------
# model FLOPs (common/model.h's model_flops_per_token, the same formula)

def matmul_weights(cfg):
    """Weights applied as a matmul once per token: per block c_q, c_k, c_v, proj, fc, mlp.proj;
    the bigram and VE projections; the tied head (V x D)."""
    d = M.dims(cfg)
    D, KVD, Fh = d["D"], d["kv_dim"], d["hidden"]
    block = D * D + 2 * KVD * D + D * D + Fh * D + D * Fh
    ve = KVD * d["VED"] if d["ve_layers"] else 0
    return d["L"] * block + D * d["BD"] + ve + d["V"] * D


def flops_per_token(cfg, T_len):
    """6 per matmul weight (forward 2, backward 4) + causal attention 6 * L * D * (T + 1)."""
    d = M.dims(cfg)
    return 6 * matmul_weights(cfg) + 6 * d["L"] * d["D"] * (T_len + 1)


def matmul_weights_from_model(model):
    """The same count from a built model: every 2-D Linear weight plus the tied head."""
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return n + model.tok_emb.weight.numel()


# ----------------------------------------------------------------------------
# kernel families from a torch.profiler chrome trace

ATTN = re.compile(r"flash|fmha|sdpa|attention|attn", re.I)
ATTN_BWD = re.compile(r"bwd|bprop|backward|cutlassB|dot_do_o|convert_dq", re.I)
GEMM = re.compile(r"gemm|nvjet|xmma|cutlass|cublas|tensorop|wgmma", re.I)


def family_of(name):
    """Which PROFILE family a CUDA kernel of the forward/backward belongs to, by its name:
    Triton's kernels (inductor's fused elementwise/reduction code: their names list the fused
    ops, which may include attention's) are memory-bound; then attention (flash, cuDNN and
    efficient SDPA kernels; backward by bwd/bprop/...); then GEMMs (cuBLAS's nvjet/xmma/gemm,
    CUTLASS); anything else (copies, memsets, eager elementwise) memory-bound. The cross-entropy
    is fused into Triton kernels, so it counts as memory-bound, not as loss."""
    if name.startswith("triton"):
        return "memory-bound layers"
    if ATTN.search(name):
        return "attention bwd" if ATTN_BWD.search(name) else "attention fwd"
    if GEMM.search(name):
        return "GEMMs (cuBLASLt)"
    return "memory-bound layers"


def kernel_times(trace_path):
    """[(name, duration ms)] of the GPU work in a chrome trace (kernels, memcpys, memsets)."""
    with open(trace_path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [(e.get("name", ""), float(e.get("dur", 0)) / 1000.0) for e in events
            if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]


def profile_phase(fn, device):
    """Run fn() under torch.profiler (CUDA activity), return [(kernel name, ms)]."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    try:
        prof.export_chrome_trace(path)
        return kernel_times(path)
    finally:
        os.unlink(path)


def breakdown(fwdbwd, optim, n_steps, step_ms):
    """Family -> (ms/step, calls/step) from the kernels of n_steps profiled steps: fwdbwd kernels
    by family_of, every optim kernel as optimizer+weights, gaps = step_ms - kernel time."""
    ms = {f: 0.0 for f in FAMILIES}
    calls = {f: 0 for f in FAMILIES}
    for name, t in fwdbwd:
        f = family_of(name)
        ms[f] += t
        calls[f] += 1
    for _, t in optim:
        ms["optimizer+weights"] += t
        calls["optimizer+weights"] += 1
    out = {f: (ms[f] / n_steps, calls[f] / n_steps) for f in FAMILIES}
    busy = sum(v[0] for v in out.values())
    out["gaps"] = (max(step_ms - busy, 0.0), 0.0)
    return out


def format_profile(rows, grad_accum, prefix="yardstick_profile"):
    """The lines of ./train_gpt's PROFILE table for a breakdown() result."""
    total = sum(v[0] for v in rows.values())
    lines = []
    for f in FAMILIES:
        m, c = rows[f]
        lines.append(f"{prefix}: {f:<22s} ms/step:{m:9.2f} ms/micro:{m / grad_accum:8.3f} "
                     f"share:{100.0 * m / total if total > 0 else 0.0:5.1f}% calls/step:{c:7.1f}")
    lines.append(f"{prefix}: {'total GPU time':<22s} ms/step:{total:9.2f} ms/micro:{total / grad_accum:8.3f} share:100.0%")
    return lines


# ----------------------------------------------------------------------------
# the model, made compile-friendly

def sdpa_attention(gqa):
    def attn(q, k, v):
        """Causal SDPA on (B, T, H, hd) q and (B, T, KV, hd) k, v; returns (B, T, H, hd)."""
        H, KV = q.size(2), k.size(2)
        kw = {}
        if H != KV:
            if gqa == "native":
                kw["enable_gqa"] = True
            else:
                k = k.repeat_interleave(H // KV, dim=2)
                v = v.repeat_interleave(H // KV, dim=2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, **kw)
        return y.transpose(1, 2)
    return attn


def freeze_rotary(model, seq_lens, device, dtype):
    """Compute every block's RoPE tables once (the module's own code, eagerly), then make its
    forward a plain lookup, so the compiled graph holds no cache logic."""
    for m in model.modules():
        if isinstance(m, M.Rotary):
            m._frozen = {T_len: m.forward(T_len, device, dtype) for T_len in seq_lens}
            m.forward = (lambda mod: lambda seq_len, device, dtype: (mod._frozen[seq_len][0].to(dtype),
                                                                     mod._frozen[seq_len][1].to(dtype)))(m)


class Compiled:
    """fn under torch.compile(fullgraph=True, dynamic=False), as the record script compiles; should
    that fail at the first call (dynamo cannot trace something), it says so in one line and
    compiles again allowing graph breaks, so the bench still gets a number (a slower one: the
    line in the log tells)."""

    def __init__(self, fn, what, enabled):
        self.fn, self.what, self.enabled = fn, what, enabled
        self.call = torch.compile(fn, fullgraph=True, dynamic=False) if enabled else fn
        self.tried = not enabled

    def __call__(self, *args):
        if self.tried:
            return self.call(*args)
        self.tried = True
        try:
            return self.call(*args)
        except Exception as e:  # noqa: BLE001 (any tracing failure: dynamo's exceptions vary by version)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            say(f"yardstick: WARNING fullgraph compile of {self.what} failed ({type(e).__name__}: {first}); "
                f"compiling with graph breaks instead (slower than the record script's way)")
            torch._dynamo.reset()
            self.call = torch.compile(self.fn, dynamic=False)
            return self.call(*args)


def set_sdpa_backend(name):
    if name == "auto":
        return
    b = torch.backends.cuda
    b.enable_flash_sdp(name == "flash")
    b.enable_mem_efficient_sdp(name == "efficient")
    b.enable_math_sdp(name == "math")
    if hasattr(b, "enable_cudnn_sdp"):
        b.enable_cudnn_sdp(name == "cudnn")


# ----------------------------------------------------------------------------
# the optimizer step (the record script's recipe)

class Optimizers:
    def __init__(self, model, cfg, device, compile_ns):
        get = lambda k: C.get(cfg, k)  # noqa: E731
        groups = T.param_groups(model)
        betas, eps, wd = (get("BETA1"), get("BETA2")), get("ADAM_EPS"), get("ADAM_WD")
        fused = {"fused": True} if device.type == "cuda" else {}
        self.adam = torch.optim.AdamW(
            [{"params": [p for _, p in groups["embed"]], "lr": get("TIED_EMBED_LR")},
             {"params": [p for _, p in groups["scalar"]], "lr": get("SCALAR_LR")}],
            betas=betas, eps=eps, weight_decay=wd, **fused)
        self.muon_params = [p for _, p in groups["muon"]]
        self.muon_bufs = [torch.zeros_like(p) for p in self.muon_params]
        self.ns = torch.compile(T.newton_schulz5) if compile_ns else T.newton_schulz5
        self.ns_steps = get("MUON_BACKEND_STEPS")
        self.lr, self.wd, self.clip = get("MATRIX_LR"), get("MUON_WD"), get("GRAD_CLIP_NORM")
        self.params = [p for p in model.parameters() if p.numel() > 0]
        self.ema_decay = get("EMA_DECAY")
        self.ema = [p.detach().float().clone() for p in self.params]
        self.cfg = cfg

    @torch.no_grad()
    def step(self, step):
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.adam.step()
        mu = T.muon_momentum(step, self.cfg)
        for p, buf in zip(self.muon_params, self.muon_bufs):
            if p.grad is None:
                continue
            buf.mul_(mu).add_(p.grad)
            g = p.grad.add(buf, alpha=mu)
            u = self.ns(g, self.ns_steps, torch.bfloat16)
            u = u * max(1, u.size(0) / u.size(1)) ** 0.5
            p.mul_(1.0 - self.lr * self.wd)
            p.add_(u.to(p.dtype), alpha=-self.lr)
        d = self.ema_decay
        torch._foreach_mul_(self.ema, d)
        torch._foreach_add_(self.ema, [p.detach().float() for p in self.params], alpha=1.0 - d)


# ----------------------------------------------------------------------------
# data

class Batches:
    """Each step's micro-batches in the reference's order (dev/ref/train.py's TokenStream), on
    the device: one pinned host buffer per step, copied without blocking."""

    def __init__(self, data_path, cfg, device):
        self.stream = T.TokenStream(T.shard_files(data_path, "train"))
        self.grad_accum, self.local, self.seq = T.batch_geometry(cfg, 1)
        self.device = device

    def next(self):
        chunks = torch.stack([self.stream.take(self.local + 1) for _ in range(self.grad_accum)])
        if self.device.type == "cuda":
            chunks = chunks.pin_memory().to(self.device, non_blocking=True)
        return [(c[:-1].view(-1, self.seq), c[1:].view(-1, self.seq)) for c in chunks]


# ----------------------------------------------------------------------------

def peak_memory(device):
    if device.type != "cuda":
        return "peak_allocated:- peak_reserved:- device_in_use:-"
    free, total = torch.cuda.mem_get_info(device)
    g = 1024.0 ** 3
    return (f"peak_allocated:{torch.cuda.max_memory_allocated(device) / g:.2f}GiB "
            f"peak_reserved:{torch.cuda.max_memory_reserved(device) / g:.2f}GiB device_in_use:{(total - free) / g:.2f}GiB")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no GPU visible to torch (use --device cpu for the smoke mode)")
    if args.steps < 1 or args.warmup < 0 or args.profile_steps < 0 or args.eval_tokens < 0:
        raise ValueError("--steps must be >= 1; --warmup, --profile-steps and --eval-tokens >= 0")
    overrides = C.parse_assignments(args.set)
    cfg = C.full_config("seed", overrides)
    compile_ok = hasattr(torch, "compile") and not args.no_compile
    mode = "bf16" if device.type == "cuda" else "fp32"
    torch.manual_seed(C.get(cfg, "SEED"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        set_sdpa_backend(args.sdpa)
    model = M.round_like_reference(M.build_model(cfg, seed=C.get(cfg, "SEED")))
    M.prepare(model, mode, device)
    if device.type == "cuda":
        M.causal_attention = sdpa_attention(args.gqa)  # the blocks look it up at call time
    T_len, T_eval = C.get(cfg, "TRAIN_SEQ_LEN"), C.get(cfg, "EVAL_SEQ_LEN")
    freeze_rotary(model, sorted({T_len, T_eval}), device, torch.float32)
    fpt = flops_per_token(cfg, T_len)
    say(f"yardstick: torch {torch.__version__} device:{device} mode:{mode} compile:{int(compile_ok)} sdpa:{args.sdpa} "
        f"gqa:{args.gqa} model_params:{sum(p.numel() for p in model.parameters())} flops_per_token:{fpt}")
    if compile_ok and args.warmup < 1:
        raise ValueError("--warmup must be >= 1 when compiling (the first step compiles)")
    train_model = Compiled(model, "the model", compile_ok)
    opt = Optimizers(model, cfg, device, compile_ok)
    data = Batches(args.data_path, cfg, device)
    tokens_per_step = C.get(cfg, "TRAIN_BATCH_TOKENS")
    say(f"yardstick: {data.grad_accum} micro-steps of {data.local // data.seq}x{data.seq} = {tokens_per_step} tokens/step")

    def fwdbwd(batches, losses):
        for x, y in batches:
            with model.autocast():
                loss = train_model(x, y)
            (loss / len(batches)).backward()
            losses.append(loss.detach())

    def one_step(step, losses):
        model.zero_grad(set_to_none=True)
        fwdbwd(data.next(), losses)
        opt.step(step)

    model.train()
    t0 = time.perf_counter()
    for s in range(args.warmup):
        one_step(s, [])
        sync(device)
        say(f"yardstick: warmup_step:{s + 1}/{args.warmup} ({time.perf_counter() - t0:.1f}s since the start)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ev0.record()
    t1 = time.perf_counter()
    losses = []
    for s in range(args.steps):
        one_step(args.warmup + s, losses)
    if device.type == "cuda":
        ev1.record()
        ev1.synchronize()
        total_ms = ev0.elapsed_time(ev1)
    else:
        total_ms = 1000.0 * (time.perf_counter() - t1)
    lv = torch.stack(losses).float().view(args.steps, -1).mean(dim=1).tolist()
    for s, l in enumerate(lv):
        if not math.isfinite(l):
            raise ValueError(f"loss is {l} at timed step {s + 1}: the yardstick diverged")
    step_ms = total_ms / args.steps
    tok_s = tokens_per_step / (step_ms / 1000.0)
    tflops = tok_s * fpt / 1e12
    say(f"yardstick: timed steps {args.warmup + 1}..{args.warmup + args.steps} loss first:{lv[0]:.4f} last:{lv[-1]:.4f}")
    say(f"yardstick_perf: steps:{args.steps} step_avg:{step_ms:.2f}ms tok/s:{tok_s:.0f} model_TFLOP/s:{tflops:.2f} "
        f"ceiling:{100.0 * tflops / H200_BF16_TFLOPS:.1f}% of {H200_BF16_TFLOPS:.0f} flops_per_token:{fpt} {peak_memory(device)}")

    if args.profile_steps > 0:
        if device.type != "cuda":
            say("yardstick_profile: skipped (kernel families need CUDA)")
        else:
            fb, op = [], []
            for s in range(args.profile_steps):
                model.zero_grad(set_to_none=True)
                batches = data.next()
                fb += profile_phase(lambda: fwdbwd(batches, []), device)
                op += profile_phase(lambda: opt.step(args.warmup + args.steps + s), device)
            for line in format_profile(breakdown(fb, op, args.profile_steps, step_ms), data.grad_accum):
                say(line)

    if args.eval_tokens > 0:
        sliding_eval(model, cfg, args, device, compile_ok)
    return 0


@torch.no_grad()
def sliding_eval(model, cfg, args, device, compile_ok):
    seq, stride, bs = C.get(cfg, "EVAL_SEQ_LEN"), C.get(cfg, "EVAL_STRIDE"), C.get(cfg, "EVAL_BATCH_SEQS")
    # ./eval's VAL_MAX_TOKENS=N keeps floor(N / seq) * seq scored targets (N + 1 tokens read)
    val = E.load_val_tokens(args.data_path, seq, args.eval_tokens // seq * seq + 1)
    windows = E.sliding_windows(val.numel(), seq, stride)
    model.eval()
    logits_fn = Compiled(model.forward_logits, "forward_logits", compile_ok)
    # every batch as (x, y, mask) on the host first (the windows are known up front), padded to bs
    batches = []
    for b0 in range(0, len(windows), bs):
        x = torch.zeros(bs, seq, dtype=torch.int32)  # (int32 on the host: half the memory)
        y = torch.zeros(bs, seq, dtype=torch.int32)
        mask = torch.zeros(bs, seq, dtype=torch.bool)
        for i, (ws, wlen, s) in enumerate(windows[b0:b0 + bs]):
            chunk = val[ws:ws + wlen + 1]
            x[i, :wlen], y[i, :wlen] = chunk[:-1], chunk[1:]
            mask[i, s:wlen] = True
        batches.append(tuple(t.pin_memory() for t in (x, y, mask)) if device.type == "cuda" else (x, y, mask))
    scored = int(sum(m.sum().item() for _, _, m in batches))

    def score(x, y, mask, acc):
        x, y, mask = x.to(device, non_blocking=True).long(), y.to(device, non_blocking=True).long(), mask.to(device, non_blocking=True)
        with model.autocast():
            z = logits_fn(x)
        nll = F.cross_entropy(z.float().reshape(-1, z.size(-1)), y.reshape(-1), reduction="none")
        acc += (nll * mask.reshape(-1)).double().sum()

    warm = torch.zeros((), dtype=torch.float64, device=device)
    score(*batches[0], warm)  # compilation, off the clock
    sync(device)
    acc = torch.zeros((), dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    for x, y, mask in batches:
        score(x, y, mask, acc)
    sync(device)
    dt = time.perf_counter() - t0
    say(f"yardstick_sliding: windows:{len(windows)} tokens_scored:{scored} time:{dt:.2f}s scored_tok/s:{scored / dt:.0f} "
        f"val_loss:{acc.item() / scored:.4f} seq:{seq} stride:{stride} batch:{bs}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", required=True, help="directory with fineweb_train_*.bin / fineweb_val_*.bin")
    ap.add_argument("--steps", type=int, default=20, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--profile-steps", type=int, default=2, help="steps under torch.profiler after the timed ones (0 = none)")
    ap.add_argument("--eval-tokens", type=int, default=0, help="sliding-eval yardstick on the first N val tokens (0 = skip)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--no-compile", action="store_true", help="eager (the CPU smoke mode; torch without compile)")
    ap.add_argument("--sdpa", default="auto", choices=["auto", "flash", "cudnn", "efficient", "math"],
                    help="SDPA backend (auto: PyTorch's own choice)")
    ap.add_argument("--gqa", default="repeat", choices=["repeat", "native"],
                    help="GQA by repeating the kv heads, or SDPA's enable_gqa (torch >= 2.5)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dev/ref/config.py keys)")
    args = ap.parse_args(argv)
    return C.cli_run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
