"""train.py: the reference training step, written from docs/RECIPE.md ("Training").

Pieces (each a plain function or a small class, so parity tests can use them one by one):

  lr_mul_iters / lr_mul_wallclock / lr_mul   the LR multiplier (warmdown), pure functions
  muon_momentum                              0.92 -> 0.99 linearly over 1500 steps
  newton_schulz5                             Muon's orthogonalization, in a chosen dtype
  Muon                                       momentum + nesterov + NS5 + shape scale + wd
  AdamW                                      torch's AdamW math (fused kernel's op order)
  clip_grad_norm                             global L2 norm clip of all gradients
  EMA                                        fp32 shadow weights, e = d*e + (1-d)*p
  param_groups                               which tensor goes to which optimizer
  Trainer.train_step / train_steps           one optimizer step / n of them
  TokenStream, next_micro_batches            the FineWeb shard loader, in the reference's order

One optimizer step (Trainer.train_step):
  scale = lr_mul(step, elapsed_ms); late QAT switches on (for good) once scale < 0.15
  for each micro-batch: loss = model(x, y); (loss * 1/n_micro).backward()
  clip the global grad norm to 0.3
  AdamW(embeddings, lr 0.035*scale), Muon(matrices, lr 0.025*scale, momentum mu(step)),
  AdamW(scalars, lr 0.025*scale), all with weight decay 0.04
  EMA update; step += 1

The reference's 20 compile-warmup steps restore the model, the optimizers and the data
loader afterwards, so they change nothing: they are not done here.

Command line (trains from a .ckpt on FineWeb-format shards, writes final weights and EMA):
  python3 dev/ref/train.py --init-ckpt A.ckpt --data-path DIR --steps N --out B.ckpt
        [--ema-out B.ema.ckpt] [--device cpu|cuda] [--mode fp32|bf16|fp64]
        [--ns-dtype bf16|fp32|fp64] [--world-size W] [--step-ms MS] [--set KEY=VALUE ...]
The model config and the training settings come from A.ckpt's config (defaults for keys it
lacks), then --set. For a CPU run shrink the batch, e.g.
  --set TRAIN_BATCH_TOKENS=2048 --set TRAIN_SEQ_LEN=128 --set MAX_WALLCLOCK_SECONDS=0
"""
import argparse
import glob
import math
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt  # noqa: E402
import config as C  # noqa: E402
import model as M  # noqa: E402

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}


# ----------------------------------------------------------------------------
# schedules (pure functions)

def lr_mul_iters(step, iterations, warmdown_iters):
    """No wallclock cap: 1, then linear to 0 over the last warmdown_iters iterations."""
    if warmdown_iters <= 0:
        return 1.0
    warmdown_start = max(iterations - warmdown_iters, 0)
    if warmdown_start <= step < iterations:
        return max((iterations - step) / max(warmdown_iters, 1), 0.0)
    return 1.0


def lr_mul_wallclock(step, elapsed_ms, warmdown_iters, max_wallclock_ms):
    """With a cap: estimate the time per step from the average so far; once the time left is
    at most warmdown_iters such steps, the multiplier is (time left) / (warmdown time)."""
    if warmdown_iters <= 0:
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def lr_mul(step, elapsed_ms, cfg):
    """The reference's multiplier: the wallclock variant when MAX_WALLCLOCK_SECONDS > 0."""
    cap_s = C.get(cfg, "MAX_WALLCLOCK_SECONDS")
    if cap_s > 0:
        return lr_mul_wallclock(step, elapsed_ms, C.get(cfg, "WARMDOWN_ITERS"), 1000.0 * cap_s)
    return lr_mul_iters(step, C.get(cfg, "ITERATIONS"), C.get(cfg, "WARMDOWN_ITERS"))


def muon_momentum(step, cfg):
    """Linear ramp from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM over the warmup steps."""
    n = C.get(cfg, "MUON_MOMENTUM_WARMUP_STEPS")
    frac = min(step / n, 1.0) if n > 0 else 1.0
    return (1 - frac) * C.get(cfg, "MUON_MOMENTUM_WARMUP_START") + frac * C.get(cfg, "MUON_MOMENTUM")


# ----------------------------------------------------------------------------
# optimizers

def newton_schulz5(G, steps=5, dtype=torch.bfloat16, eps=NS_EPS):
    """Approximately orthogonalize G (rows x cols) with `steps` quintic Newton-Schulz
    iterations, all in `dtype` (bf16 in the reference): X = G/(|G|_F + eps), transposed when
    rows > cols so that X X^T is the small Gram matrix, then X <- aX + (bA + cA^2)X, A = XX^T."""
    a, b, c = NS_COEFFS
    X = G.to(dtype)
    X = X / (X.norm() + eps)
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + (c * A) @ A  # the reference writes `c * A @ A`, which Python reads as (c*A) @ A
        X = a * X + B @ X
    return X.T if transposed else X


class Muon:
    """Muon for 2-D weights: buf = mu*buf + g; g' = g + mu*buf (nesterov); u = NS5(g') scaled
    by sqrt(max(1, rows/cols)); p *= 1 - lr*wd; p -= lr*u. The update u is kept in the NS dtype
    (the reference packs updates in a bf16 buffer), then cast to the parameter's dtype."""

    def __init__(self, named_params, backend_steps=5, ns_dtype=torch.bfloat16, nesterov=True):
        self.params = list(named_params)
        self.backend_steps, self.ns_dtype, self.nesterov = backend_steps, ns_dtype, nesterov
        self.buffers = {}  # name -> momentum buffer (dtype of the gradient)

    @torch.no_grad()
    def step(self, lr, momentum, weight_decay):
        for name, p in self.params:
            update = None
            if p.grad is not None:
                g = p.grad
                if name not in self.buffers:
                    self.buffers[name] = torch.zeros_like(g)
                buf = self.buffers[name]
                buf.mul_(momentum).add_(g)
                if self.nesterov:
                    g = g.add(buf, alpha=momentum)
                update = newton_schulz5(g, self.backend_steps, self.ns_dtype)
                update = update * max(1, update.size(0) / update.size(1)) ** 0.5
            if weight_decay > 0.0:
                p.mul_(1.0 - lr * weight_decay)
            if update is not None:  # (the reference adds zeros for a missing grad)
                p.add_(update.to(p.dtype), alpha=-lr)


class AdamW:
    """torch.optim.AdamW's update, in the order of its fused CUDA kernel, computed in fp32
    (fp64 for fp64 parameters) with the state stored in the parameter's dtype (as torch does:
    bf16 state for the bf16 embedding tables in the reference):
        p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2
        p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    Parameters without a gradient are skipped entirely (no decay either), like torch."""

    def __init__(self, named_params, betas, eps, weight_decay):
        self.params = list(named_params)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.state = {}  # name -> dict(step, exp_avg, exp_avg_sq)

    @torch.no_grad()
    def step(self, lr):
        b1, b2 = self.beta1, self.beta2
        for name, p in self.params:
            if p.grad is None:
                continue
            st = self.state.setdefault(name, dict(step=0, exp_avg=torch.zeros_like(p),
                                                  exp_avg_sq=torch.zeros_like(p)))
            st["step"] += 1
            t = st["step"]
            op = torch.float64 if p.dtype == torch.float64 else torch.float32
            P, G = p.to(op), p.grad.to(op)
            m, v = st["exp_avg"].to(op), st["exp_avg_sq"].to(op)
            P = P - (lr * self.weight_decay) * P
            m = b1 * m + (1 - b1) * G
            v = b2 * v + (1 - b2) * G * G
            step_size = lr / (1 - b1 ** t)
            denom = v.sqrt() / math.sqrt(1 - b2 ** t) + self.eps
            P = P - step_size * m / denom
            p.copy_(P)
            st["exp_avg"].copy_(m)
            st["exp_avg_sq"].copy_(v)


@torch.no_grad()
def clip_grad_norm(params, max_norm):
    """torch.nn.utils.clip_grad_norm_: total = |(|g_1|, |g_2|, ...)| (each norm in its grad's
    dtype, the total in fp32), every grad *= min(1, max_norm / (total + 1e-6)). Returns total."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(g) for g in grads]
    total = torch.linalg.vector_norm(torch.stack([n.to(torch.promote_types(n.dtype, torch.float32)) for n in norms]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.device))
    return total


class EMA:
    """Shadow copy of every state_dict tensor in fp32 (fp64 in fp64 mode), updated after each
    step: e = decay*e + (1-decay)*p. The reference scores (and quantizes) these weights."""

    def __init__(self, model, decay):
        self.decay = decay
        self.state = OrderedDict((n, t.detach().to(torch.promote_types(t.dtype, torch.float32)).clone())
                                 for n, t in model.state_dict().items())

    @torch.no_grad()
    def update(self, model):
        for n, t in model.state_dict().items():
            e = self.state[n]
            e.mul_(self.decay).add_(t.detach().to(e.dtype), alpha=1.0 - self.decay)

    def state_dict_like(self, model):
        """The EMA weights cast to the model's dtypes (what the reference loads at the end)."""
        cur = model.state_dict()
        return OrderedDict((n, e.to(cur[n].dtype)) for n, e in self.state.items())


def param_groups(model):
    """The reference's split of the parameters: 'muon' = 2-D block matrices + bigram/VE proj;
    'embed' = tok_emb / bigram / VE tables (AdamW at TIED_EMBED_LR); 'scalar' = everything
    else: q_gain, attn/mlp scales, resid_mix, skip_weights, smear gate, bigram/VE scales
    (AdamW at SCALAR_LR). Returns dict group -> [(name, param)]."""
    groups = {"muon": [], "embed": [], "scalar": []}
    for name, p in model.named_parameters():
        if p.numel() == 0:
            continue  # skip_weights of a 1-layer model: no optimizer has it in the reference
        is_control = any(pat in name for pat in M.CONTROL_PATTERNS)
        if name.startswith("blocks."):
            group = "muon" if p.ndim == 2 and not is_control else "scalar"
        elif name in M.EMBED_NAMES:
            group = "embed"
        elif name in ("bigram.proj.weight", "ve_shared.proj.weight"):
            group = "muon"
        else:
            group = "scalar"
        groups[group].append((name, p))
    return groups


# ----------------------------------------------------------------------------
# the step

class Trainer:
    """Optimizer state, EMA and step counter around a prepared model (model.prepare)."""

    def __init__(self, model, cfg, ns_dtype=None):
        self.model, self.cfg = model, dict(cfg)
        get = lambda k: C.get(cfg, k)  # noqa: E731
        if ns_dtype is None:
            ns_dtype = torch.bfloat16 if model.mode == "bf16" else model.tok_emb.weight.dtype
        groups = param_groups(model)
        betas, eps = (get("BETA1"), get("BETA2")), get("ADAM_EPS")
        self.adam_embed = AdamW(groups["embed"], betas, eps, get("ADAM_WD"))
        self.muon = Muon(groups["muon"], get("MUON_BACKEND_STEPS"), ns_dtype)
        self.adam_scalar = AdamW(groups["scalar"], betas, eps, get("ADAM_WD"))
        self.ema = EMA(model, get("EMA_DECAY"))
        self.step = 0
        self.train_time_ms = 0.0  # measured time of the steps so far (the wallclock schedule)
        self.qat_step = 0 if get("QAT_ENABLED") else None  # step at which QAT went on
        model.set_qat(self.qat_step is not None)

    def train_step(self, micro_batches, elapsed_ms=None):
        """One optimizer step over micro_batches = [(x, y), ...] (all ranks' micro-steps; each
        loss is scaled by 1/len). elapsed_ms: training time before this step for the wallclock
        schedule (default: the measured time). Returns (mean loss, lr multiplier)."""
        t0 = time.perf_counter()
        model, get = self.model, lambda k: C.get(self.cfg, k)
        scale = lr_mul(self.step, self.train_time_ms if elapsed_ms is None else elapsed_ms, self.cfg)
        threshold = get("LATE_QAT_THRESHOLD")
        if threshold > 0 and scale < threshold and self.qat_step is None:
            model.set_qat(True)
            self.qat_step = self.step
        model.train()
        model.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for x, y in micro_batches:
            with model.autocast():
                loss = model(x, y)
            loss_sum += loss.item()
            (loss * (1.0 / len(micro_batches))).backward()
        if get("GRAD_CLIP_NORM") > 0:
            clip_grad_norm(model.parameters(), get("GRAD_CLIP_NORM"))
        self.adam_embed.step(get("TIED_EMBED_LR") * scale)
        self.muon.step(get("MATRIX_LR") * scale, muon_momentum(self.step, self.cfg), get("MUON_WD"))
        self.adam_scalar.step(get("SCALAR_LR") * scale)
        model.zero_grad(set_to_none=True)
        self.ema.update(model)
        self.step += 1
        if model.tok_emb.weight.is_cuda:
            torch.cuda.synchronize()
        self.train_time_ms += 1000.0 * (time.perf_counter() - t0)
        return loss_sum / len(micro_batches), scale


def train_steps(model, batches, n_steps, cfg, trainer=None, elapsed_ms=None, log=None):
    """Run n_steps optimizer steps; returns (losses, trainer).
    batches: a list (indexed by step) or a callable step -> [(x, y), ...] micro-batches.
    elapsed_ms: None (measured time), or a callable step -> ms (a deterministic wallclock).
    log: optional callable(step, loss, scale, trainer) after each step."""
    trainer = trainer or Trainer(model, cfg)
    losses = []
    for _ in range(n_steps):
        s = trainer.step
        mb = batches(s) if callable(batches) else batches[s]
        loss, scale = trainer.train_step(mb, None if elapsed_ms is None else elapsed_ms(s))
        losses.append(loss)
        if log:
            log(s + 1, loss, scale, trainer)
    return losses, trainer


# ----------------------------------------------------------------------------
# data: FineWeb shards (docs/RECIPE.md "Data")

SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_INTS = 20240520, 1, 256


def load_shard(path):
    """Tokens of one shard as an int64 tensor; ValueError naming the file if it is malformed."""
    size = os.path.getsize(path)
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if header.size != SHARD_HEADER_INTS or int(header[0]) != SHARD_MAGIC or int(header[1]) != SHARD_VERSION:
        raise ValueError(f"{path}: not a FineWeb shard (bad header magic/version)")
    n = int(header[2])
    if size != 4 * SHARD_HEADER_INTS + 2 * n:
        raise ValueError(f"{path}: size {size} != 1024 + 2*{n} (truncated or padded shard)")
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=4 * SHARD_HEADER_INTS)
    return torch.from_numpy(tokens.astype(np.int64))


def shard_files(data_path, split):
    files = sorted(glob.glob(os.path.join(data_path, f"fineweb_{split}_*.bin")))
    if not files:
        raise ValueError(f"{data_path}: no fineweb_{split}_*.bin files")
    return files


class TokenStream:
    """One cursor through the train shards in name order, wrapping around forever."""

    def __init__(self, files):
        self.files, self.file_idx = list(files), 0
        self.tokens, self.pos = load_shard(self.files[0]), 0

    def take(self, n):
        chunks = []
        while n > 0:
            avail = self.tokens.numel() - self.pos
            if avail <= 0:
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.file_idx]), 0
                continue
            k = min(n, avail)
            chunks.append(self.tokens[self.pos:self.pos + k])
            self.pos += k
            n -= k
        return torch.cat(chunks)


def batch_geometry(cfg, world_size):
    """(grad_accum, local_tokens, seq_len) with the reference's divisibility rules."""
    if world_size < 1 or 8 % world_size:
        raise ValueError(f"world size {world_size} must divide 8")
    grad_accum = 8 // world_size
    total, seq = C.get(cfg, "TRAIN_BATCH_TOKENS"), C.get(cfg, "TRAIN_SEQ_LEN")
    local = total // (world_size * grad_accum)
    if local < seq or local % seq:
        raise ValueError(f"TRAIN_BATCH_TOKENS={total} / (world {world_size} * accum {grad_accum}) = {local} "
                         f"is not a positive multiple of TRAIN_SEQ_LEN={seq}")
    return grad_accum, local, seq


def next_micro_batches(stream, cfg, world_size=1, device="cpu"):
    """One optimizer step's micro-batches: for each of grad_accum micro-steps, the stream gives
    world_size * (local + 1) tokens and rank r takes slice r: inputs [:-1], targets [1:].
    Returned micro-step-major: [(x, y) of step 0 rank 0, step 0 rank 1, ..., step 1 rank 0, ...]."""
    grad_accum, local, seq = batch_geometry(cfg, world_size)
    out = []
    for _ in range(grad_accum):
        chunk = stream.take((local + 1) * world_size)
        for r in range(world_size):
            s = chunk[r * (local + 1):(r + 1) * (local + 1)]
            out.append((s[:-1].reshape(-1, seq).to(device), s[1:].reshape(-1, seq).to(device)))
    return out


# ----------------------------------------------------------------------------
# command line

def load_model(path, device, mode, overrides=None):
    """(model, cfg) from a .ckpt: config from the file (+ overrides), weights checked and loaded."""
    cfg, tensors = ckpt.read_ckpt(path)
    cfg = {**C.DEFAULTS, **cfg, **(overrides or {})}
    M.check_state_dict(cfg, tensors, path)
    model = M.GPT(cfg, init=False)  # the weights come from the file
    model.load_state_dict(tensors, strict=True)
    M.prepare(model, mode, device)
    return model, cfg


def main(argv):
    ap = argparse.ArgumentParser(prog="train.py", description="reference training run from a .ckpt")
    ap.add_argument("--init-ckpt", required=True)
    ap.add_argument("--data-path", required=True, help="directory with fineweb_train_*.bin")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", required=True, help="final weights (.ckpt)")
    ap.add_argument("--ema-out", default=None, help="EMA weights (default: OUT with .ema.ckpt)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--mode", default=None, choices=M.MODES, help="default: fp32 on cpu, bf16 on cuda")
    ap.add_argument("--ns-dtype", default=None, choices=sorted(DTYPES), help="default: bf16 in bf16 mode, else the mode's")
    ap.add_argument("--world-size", type=int, default=1, help="emulate W ranks (batch geometry)")
    ap.add_argument("--step-ms", type=float, default=None,
                    help="pretend every step takes MS ms (deterministic wallclock schedule)")
    ap.add_argument("--ref-dtypes", action="store_true",
                    help="store tensors in the reference's dtypes (embeddings bf16) instead of the model's")
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    mode = args.mode or ("bf16" if args.device == "cuda" else "fp32")
    def run():
        model, cfg = load_model(args.init_ckpt, args.device, mode, C.parse_assignments(args.set))
        stream = TokenStream(shard_files(args.data_path, "train"))
        batch_geometry(cfg, args.world_size)
        trainer = Trainer(model, cfg, DTYPES[args.ns_dtype] if args.ns_dtype else None)
        print(f"model_params:{sum(p.numel() for p in model.parameters())} mode:{mode} device:{args.device} "
              f"ns_dtype:{str(trainer.muon.ns_dtype).replace('torch.', '')} world_size:{args.world_size}")
        cap_ms = 1000.0 * C.get(cfg, "MAX_WALLCLOCK_SECONDS")
        for _ in range(args.steps):
            s = trainer.step
            elapsed = None if args.step_ms is None else s * args.step_ms
            qat_before = trainer.qat_step
            loss, scale = trainer.train_step(next_micro_batches(stream, cfg, args.world_size, args.device), elapsed)
            if trainer.qat_step is not None and qat_before is None:
                print(f"late_qat:enabled step:{trainer.qat_step} scale:{scale:.4f}")
            if args.log_every > 0 and (trainer.step % args.log_every == 0 or trainer.step == args.steps):
                print(f"step:{trainer.step}/{args.steps} train_loss:{loss:.6f} lr_mul:{scale:.6f} "
                      f"train_time:{trainer.train_time_ms:.0f}ms", flush=True)
            done_ms = trainer.train_time_ms if args.step_ms is None else trainer.step * args.step_ms
            if cap_ms > 0 and done_ms >= cap_ms:
                print(f"stopping_early: wallclock_cap step:{trainer.step}/{args.steps}")
                break
        out_cfg = dict(cfg)
        ema_out = args.ema_out or (args.out[:-5] if args.out.endswith(".ckpt") else args.out) + ".ema.ckpt"
        ckpt.write_ckpt(args.out, out_cfg, M.model_state_for_ckpt(model, args.ref_dtypes))
        ema_sd = trainer.ema.state_dict_like(model)
        want = {n: dt for n, _, dt in M.expected_tensors(cfg)}
        ckpt.write_ckpt(ema_out, out_cfg, OrderedDict(
            (n, t.to("cpu", want[n] if args.ref_dtypes else t.dtype)) for n, t in ema_sd.items()))
        print(f"wrote {args.out} and {ema_out}")
    return C.cli_run(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
