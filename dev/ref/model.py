"""model.py: the GPT of the 1.1233 record in plain PyTorch, written from docs/RECIPE.md.

This is the project's Python reference for the CUDA code: same math, and exactly the
reference's parameter names and state_dict order (notes/CKPT_FORMAT.md), so a .ckpt written by
either side loads into the other. It runs

  - on the CPU with Debian's torch 1.13 (no F.rms_norm, no scaled_dot_product_attention, no
    torch.compile there): rmsnorm and causal attention are written out explicitly;
  - on a GPU with torch 2.x.

Three numeric modes (prepare(model, mode, device)):

  fp32   every parameter and activation in float32, no autocast: the CPU parity mode.
  fp64   the same in float64: for gradient checks (cross-entropy stays in float64 too).
  bf16   the reference's own path: the three embedding tables in bf16, everything else fp32,
         run under torch.autocast(bfloat16) (the `model.autocast()` context) with the same
         casts as the reference (weights cast to the input dtype, scalars to the activation
         dtype), F.rms_norm when torch has it, SDPA (flash) attention on a GPU, and the
         reference's bf16 RoPE tables for sequences <= 1024 (see Rotary).

The forward pass (docs/RECIPE.md "The model"):

  x = rmsnorm(tok_emb[ids] + bigram(ids)); x = smear(x); x0 = x
  encoder blocks 0..L/2-1 push their outputs; decoder block i first adds
  skip_weights[i] * (last pushed output, popped) while any remain
  block l (s = 1/sqrt(l+1) with LN_SCALE):
      x_in = mix[0]*x + mix[1]*x0
      x    = x_in + attn_scale * attn(rmsnorm(x_in) * s, ve on VE layers)
      x    = x    + mlp_scale  * proj(relu(fc(rmsnorm(x) * s))^2)
  logits = 30 * tanh(rmsnorm(x) @ tok_emb^T / 30); loss = mean cross-entropy in fp32

Also here: the init of the reference (seeded: construction order and RNG use follow the
reference, so the same seed gives the same initial weights, up to the LAPACK behind
orthogonal_), QAT fake-quantization with a straight-through gradient, and the tensor list
(expected_tensors) that the converter and tests check files against.

Command line:
  python3 dev/ref/model.py count [--preset seed|record] [--set KEY=VALUE ...]
      print the tensor list and the parameter count
  python3 dev/ref/model.py init OUT.ckpt [--preset ...] [--set ...] [--seed N] [--random]
      write the initial weights (in the reference's dtypes, rounded through bf16 as the
      reference does) with the full config; --random fills every tensor with random values
      instead (for cross-checks, where zero-initialized matrices would hide bugs)
"""
import argparse
import contextlib
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config as C  # noqa: E402

# float32 machine epsilon: what F.rms_norm(eps=None) uses on bf16/fp32 input (docs/RECIPE.md "The model")
RMS_EPS = 1.1920929e-07
# the rotary module's reference length: beyond it the RoPE base is NTK-scaled
ROPE_REF_LEN = 1024
# bigram hash multipliers
HASH_A, HASH_B = 36313, 27191
# the three tables the reference keeps in bf16 (nn.Embedding after model.bfloat16())
EMBED_NAMES = ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight")
# names the reference treats as control tensors (AdamW at SCALAR_LR even when 2-D)
CONTROL_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix",
                    "resid_mixes", "q_gain", "skip_weight", "skip_weights", "smear", "dtg_gate",
                    "ve_layer_scales", "ve_shared.scale")
MODES = ("fp32", "fp64", "bf16")

# Implementation switches, set by prepare() (global: the last prepare() decides): "manual"
# rmsnorm / "explicit" attention work everywhere; "torch" rmsnorm (F.rms_norm) and "sdpa"
# attention need torch 2.x.
# "rope_short": "fp32" (clean) or "bf16" (the reference's bf16 tables for T <= 1024, see Rotary).
IMPL = {"rms_norm": "manual", "attention": "explicit", "rope_short": "fp32"}


# ----------------------------------------------------------------------------
# the tensor list (no model needed)

def dims(cfg):
    """The derived sizes of a config, with the reference's consistency checks."""
    d = dict(V=C.get(cfg, "VOCAB_SIZE"), L=C.get(cfg, "NUM_LAYERS"), D=C.get(cfg, "MODEL_DIM"),
             H=C.get(cfg, "NUM_HEADS"), KV=C.get(cfg, "NUM_KV_HEADS"),
             B=C.get(cfg, "BIGRAM_VOCAB_SIZE"), BD=C.get(cfg, "BIGRAM_DIM"),
             VED=C.get(cfg, "VE_DIM"), ve_layers=C.ve_layers(cfg), rope_dims=C.get(cfg, "ROPE_DIMS"))
    if d["L"] < 1 or d["D"] < 1 or d["H"] < 1 or d["KV"] < 1 or d["V"] < 1:
        raise ValueError("config: VOCAB_SIZE, NUM_LAYERS, MODEL_DIM, NUM_HEADS, NUM_KV_HEADS must be >= 1")
    if d["D"] % d["H"]:
        raise ValueError(f"config: MODEL_DIM={d['D']} is not divisible by NUM_HEADS={d['H']}")
    if d["H"] % d["KV"]:
        raise ValueError(f"config: NUM_HEADS={d['H']} is not divisible by NUM_KV_HEADS={d['KV']}")
    d["hd"] = d["D"] // d["H"]
    if d["hd"] % 2:
        raise ValueError(f"config: head_dim={d['hd']} must be even for RoPE")
    rd = d["rope_dims"] if d["rope_dims"] > 0 else d["hd"]
    if rd % 2 or rd > d["hd"] or rd < 4:
        raise ValueError(f"config: ROPE_DIMS={d['rope_dims']} must be even, >= 4 and <= head_dim={d['hd']}")
    d["hidden"] = int(C.get(cfg, "MLP_MULT") * d["D"])
    if d["B"] == 1 or d["B"] < 0:
        raise ValueError(f"config: BIGRAM_VOCAB_SIZE={d['B']} must be 0 (off) or >= 2")
    for l in d["ve_layers"]:
        if not 0 <= l < d["L"]:
            raise ValueError(f"config: VE_LAYERS has layer {l}, outside 0..{d['L'] - 1}")
    if len(set(d["ve_layers"])) != len(d["ve_layers"]):
        raise ValueError(f"config: VE_LAYERS={C.get(cfg, 'VE_LAYERS')} repeats a layer")
    if C.get(cfg, "TIE_EMBEDDINGS") != 1:
        raise ValueError("config: only TIE_EMBEDDINGS=1 is supported")
    if C.get(cfg, "LOGIT_SOFTCAP") <= 0:
        raise ValueError("config: LOGIT_SOFTCAP must be positive")
    d["n_skip"] = min(d["L"] // 2, d["L"] - d["L"] // 2)
    d["kv_dim"] = d["KV"] * d["hd"]
    return d


def expected_tensors(cfg):
    """[(name, shape, reference dtype)] in state_dict order, for a config (see CKPT_FORMAT.md)."""
    d = dims(cfg)
    D, f32, bf16 = d["D"], torch.float32, torch.bfloat16
    out = [("skip_weights", (d["n_skip"], D), f32), ("tok_emb.weight", (d["V"], D), bf16)]
    if d["B"] > 0:
        out.append(("bigram.scale", (), f32))
        out.append(("bigram.embed.weight", (d["B"], d["BD"]), bf16))
        if d["BD"] != D:
            out.append(("bigram.proj.weight", (D, d["BD"]), f32))
    out.append(("smear.gate", (D,), f32))
    for l in range(d["L"]):
        p = f"blocks.{l}."
        out += [(p + "attn_scale", (D,), f32), (p + "mlp_scale", (D,), f32),
                (p + "resid_mix", (2, D), f32), (p + "attn.q_gain", (d["H"],), f32),
                (p + "attn.c_q.weight", (D, D), f32), (p + "attn.c_k.weight", (d["kv_dim"], D), f32),
                (p + "attn.c_v.weight", (d["kv_dim"], D), f32), (p + "attn.proj.weight", (D, D), f32),
                (p + "mlp.fc.weight", (d["hidden"], D), f32), (p + "mlp.proj.weight", (D, d["hidden"]), f32)]
    if d["ve_layers"]:
        out.append(("ve_shared.scale", (), f32))
        out.append(("ve_shared.embed.weight", (d["V"], d["VED"]), bf16))
        if d["VED"] != d["kv_dim"]:
            out.append(("ve_shared.proj.weight", (d["kv_dim"], d["VED"]), f32))
        out += [(f"ve_layer_scales.{k}", (1,), f32) for k in range(len(d["ve_layers"]))]
    return out


def param_count(cfg):
    return sum(math.prod(shape) for _, shape, _ in expected_tensors(cfg))


# ----------------------------------------------------------------------------
# building blocks

def rms_norm(x):
    """x / sqrt(mean(x^2) + eps) over the last dim, no weight; computed in >= fp32."""
    if IMPL["rms_norm"] == "torch":
        return F.rms_norm(x, (x.size(-1),))  # the reference's own op (eps=None -> fp32 eps)
    xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    return (xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + RMS_EPS)).to(x.dtype)


@torch.no_grad()
def fake_quant_int6(w):
    """Per-row symmetric int6 fake quantization of a weight (the QAT forward value):
    s = max(rowmax|w| / 31, 1/31), q = clamp(round_half_even(w / s), -32, 31), returns q * s."""
    w = w.float() if w.dtype != torch.float64 else w
    scale = (w.abs().amax(dim=1) / 31.0).clamp_min(1.0 / 31.0)
    return torch.clamp(torch.round(w / scale[:, None]), -32, 31) * scale[:, None]


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose (fp32) weight is cast to the input's dtype at use.
    With `qat` on (and in training mode) the forward uses the fake-quantized weight while the
    gradient flows to the real weight unchanged (straight-through estimator)."""

    def __init__(self, in_features, out_features, zero_init=False):
        super().__init__(in_features, out_features, bias=False)  # default init: uses the RNG
        self.zero_init = zero_init  # _init_weights zeroes it (residual output projections)
        self.qat = False

    def forward(self, x):
        w = self.weight.to(x.dtype)
        if self.qat and self.training:
            w = w + (fake_quant_int6(self.weight).to(x.dtype) - w).detach()
        return F.linear(x, w)


class Rotary(nn.Module):
    """cos/sin tables of partial RoPE: rope_dims/2 frequencies base^(-2i/rope_dims). For a
    sequence longer than ROPE_REF_LEN the base becomes base * (T/1024)^(rd/(rd-2)) (NTK)."""

    def __init__(self, head_dim, base, rope_dims):
        super().__init__()
        self.rope_dims = rope_dims if rope_dims > 0 else head_dim
        self.base = base
        # the base frequencies are computed once on the CPU, the NTK ones on the device (as
        # the reference does; it can matter in the last bit of pow)
        self.inv_freq_cpu = 1.0 / (base ** (torch.arange(0, self.rope_dims, 2, dtype=torch.float32) / self.rope_dims))
        self._cache = None  # (seq_len, device, cos, sin), float32

    def forward(self, seq_len, device, dtype):
        short_bf16 = seq_len <= ROPE_REF_LEN and IMPL["rope_short"] == "bf16"
        key = (seq_len, device, short_bf16)
        if self._cache is None or self._cache[0] != key:
            rd = self.rope_dims
            if seq_len > ROPE_REF_LEN:
                base = self.base * (seq_len / ROPE_REF_LEN) ** (rd / (rd - 2))
                inv_freq = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float32, device=device) / rd))
            elif short_bf16:
                # The reference's quirk: model.bfloat16() also turns its stored inv_freq buffer to
                # bf16, and the positions are then made in that dtype too (arange in bf16 rounds
                # positions above 256). Only sequences <= 1024 use that buffer; the real runs
                # (T = 2048) take the NTK branch above, in fp32.
                inv_freq = self.inv_freq_cpu.to(device, torch.bfloat16)
            else:
                inv_freq = self.inv_freq_cpu.to(device)
            freqs = torch.outer(torch.arange(seq_len, device=device, dtype=inv_freq.dtype), inv_freq)
            self._cache = (key, freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :])
        return self._cache[1].to(dtype), self._cache[2].to(dtype)


def apply_rotary(x, cos, sin, rope_dims):
    """Rotate the first rope_dims dims of x (B, T, heads, hd): with x1 = dims [0, rd/2),
    x2 = dims [rd/2, rd): (x1, x2) -> (x1 cos + x2 sin, -x1 sin + x2 cos); the rest pass."""
    half = rope_dims // 2
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos, rest), dim=-1)


def causal_attention(q, k, v):
    """Causal softmax attention, scale 1/sqrt(hd). q (B, T, H, hd); k, v (B, T, KV, hd); query
    head h reads kv head h // (H/KV). Returns (B, T, H, hd) in q's dtype."""
    B, T, H, hd = q.shape
    group = H // k.size(2)
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd)
    if IMPL["attention"] == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    # explicit: scores and softmax in fp32 at least (as flash attention does), never autocast
    work = torch.float32 if q.dtype in (torch.bfloat16, torch.float16) else q.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        scores = (q.to(work) @ k.to(work).transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        y = (probs @ v.to(work)).to(q.dtype)
    return y.transpose(1, 2)


def xsa(y, v):
    """Exclusive self attention: remove from each head's output its component along its own
    (normalized) value vector. y (B, T, H, hd), v (B, T, KV, hd)."""
    B, T, H, hd = y.shape
    kv = v.size(2)
    yg = y.reshape(B, T, kv, H // kv, hd)
    vn = F.normalize(v, dim=-1).unsqueeze(-2)  # v / max(|v|, 1e-12), broadcast over the group
    return (yg - (yg * vn).sum(dim=-1, keepdim=True) * vn).reshape(B, T, H, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, d, layer_idx, rope_base, qk_gain_init, use_xsa):
        super().__init__()
        D, self.num_heads, self.num_kv_heads, self.head_dim = d["D"], d["H"], d["KV"], d["hd"]
        self.c_q = CastedLinear(D, D)
        self.c_k = CastedLinear(D, d["kv_dim"])
        self.c_v = CastedLinear(D, d["kv_dim"])
        self.proj = CastedLinear(D, D, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((self.num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, rope_base, d["rope_dims"])
        self.use_xsa = use_xsa

    def forward(self, x, v_embed=None):
        B, T, D = x.shape
        q = self.c_q(x).reshape(B, T, self.num_heads, self.head_dim)
        k = self.c_k(x).reshape(B, T, self.num_kv_heads, self.head_dim)
        v = self.c_v(x)
        if v_embed is not None:
            v = v + v_embed
        v = v.reshape(B, T, self.num_kv_heads, self.head_dim)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(T, x.device, q.dtype)
        rd = self.rotary.rope_dims
        q, k = apply_rotary(q, cos, sin, rd), apply_rotary(k, cos, sin, rd)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v)
        if self.use_xsa:
            y = xsa(y, v)
        return self.proj(y.reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, D, hidden):
        super().__init__()
        self.fc = CastedLinear(D, hidden)
        self.proj = CastedLinear(hidden, D, zero_init=True)

    def forward(self, x):
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, d, layer_idx, rope_base, qk_gain_init, ln_scale, use_xsa):
        super().__init__()
        D = d["D"]
        self.attn = CausalSelfAttention(d, layer_idx, rope_base, qk_gain_init, use_xsa)
        self.mlp = MLP(D, d["hidden"])
        self.attn_scale = nn.Parameter(torch.ones(D, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(D, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(D), torch.zeros(D))).float())
        self.ln_scale_factor = 1.0 / math.sqrt(layer_idx + 1) if ln_scale else 1.0

    def forward(self, x, x0, v_embed=None):
        mix = self.resid_mix.to(x.dtype)
        x_in = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = x_in + self.attn_scale.to(x_in.dtype)[None, None, :] * \
            self.attn(rms_norm(x_in) * self.ln_scale_factor, v_embed=v_embed)
        return x + self.mlp_scale.to(x.dtype)[None, None, :] * \
            self.mlp(rms_norm(x) * self.ln_scale_factor)


class SmearGate(nn.Module):
    """out[t] = (1-g)*x[t] + g*x[t-1] with g = sigmoid(gate) per channel, x[-1] = 0."""

    def __init__(self, D):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(D, dtype=torch.float32))

    def forward(self, x):
        g = torch.sigmoid(self.gate.to(x.dtype))[None, None, :]
        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        return (1 - g) * x + g * x_prev


def bigram_hash(ids, buckets):
    """h[0] = B-1; h[t] = (36313*ids[t] XOR 27191*ids[t-1]) mod (B-1), in int32, per sequence."""
    t = ids.to(torch.int32)
    mod = buckets - 1
    out = torch.empty_like(t)
    out[..., 0] = mod
    out[..., 1:] = torch.bitwise_xor(HASH_A * t[..., 1:], HASH_B * t[..., :-1]) % mod
    return out.long()


class BigramHashEmbedding(nn.Module):
    def __init__(self, buckets, dim, D):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(dim, D) if dim != D else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)  # _init_weights makes it orthogonal when >= 64x64
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))

    def forward(self, ids):
        h = self.embed(bigram_hash(ids, self.buckets))
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)


class ValueEmbedding(nn.Module):
    """One shared table of token vectors projected to the kv width, added to v on VE layers."""

    def __init__(self, V, dim, kv_dim):
        super().__init__()
        self.embed = nn.Embedding(V, dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = CastedLinear(dim, kv_dim) if dim != kv_dim else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.1, dtype=torch.float32))

    def forward(self, ids):
        h = self.embed(ids)
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)


class GPT(nn.Module):
    def __init__(self, cfg, init=True):
        super().__init__()
        d = self.d = dims(cfg)
        self.cfg = dict(cfg)
        self.logit_softcap = C.get(cfg, "LOGIT_SOFTCAP")
        self.tied_embed_init_std = C.get(cfg, "TIED_EMBED_INIT_STD")
        self.mode = "fp32"
        # construction order = the reference's (it decides which RNG draws go where)
        self.tok_emb = nn.Embedding(d["V"], d["D"])
        self.bigram = BigramHashEmbedding(d["B"], d["BD"], d["D"]) if d["B"] > 0 else None
        self.smear = SmearGate(d["D"])
        self.num_encoder_layers = d["L"] // 2
        self.num_decoder_layers = d["L"] - self.num_encoder_layers
        self.skip_weights = nn.Parameter(torch.ones(d["n_skip"], d["D"], dtype=torch.float32))
        xsa_from = d["L"] - C.get(cfg, "XSA_LAST_N") if C.get(cfg, "XSA_LAST_N") > 0 else d["L"]
        self.blocks = nn.ModuleList([
            Block(d, l, C.get(cfg, "ROPE_BASE"), C.get(cfg, "QK_GAIN_INIT"), bool(C.get(cfg, "LN_SCALE")),
                  use_xsa=l >= xsa_from)
            for l in range(d["L"])])
        self.ve_layer_indices = d["ve_layers"]
        if self.ve_layer_indices:
            self.ve_shared = ValueEmbedding(d["V"], d["VED"], d["kv_dim"])
            self.ve_layer_scales = nn.ParameterList(
                [nn.Parameter(torch.ones(1, dtype=torch.float32)) for _ in self.ve_layer_indices])
        else:
            self.ve_shared = None
            self.ve_layer_scales = nn.ParameterList()
        if init:  # skipped when weights are loaded right after (orthogonal_ is slow on a CPU)
            self._init_weights()

    def _init_weights(self):
        """tok_emb N(0, std); every linear: zero if zero_init, else orthogonal when both dims
        are >= 64 (times 1/sqrt(2L) for the bigram/VE `.proj`), else left at nn.Linear's
        default (only happens in tiny test configs)."""
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.tied_embed_init_std)
        for name, m in self.named_modules():
            if not isinstance(m, nn.Linear):
                continue
            if getattr(m, "zero_init", False):
                nn.init.zeros_(m.weight)
            elif m.weight.shape[0] >= 64 and m.weight.shape[1] >= 64:
                nn.init.orthogonal_(m.weight, gain=1.0)
                if ".proj." in name or name.endswith(".proj"):
                    with torch.no_grad():
                        m.weight.mul_(1.0 / math.sqrt(2 * len(self.blocks)))

    # --- switches ---------------------------------------------------------------------------

    def set_qat(self, on):
        """Fake-quantize every CastedLinear weight in training forwards from now on (or not)."""
        for m in self.modules():
            if isinstance(m, CastedLinear):
                m.qat = bool(on)

    @property
    def qat(self):
        return any(m.qat for m in self.modules() if isinstance(m, CastedLinear))

    def autocast(self):
        """The context to run forwards in: bf16 autocast in bf16 mode, nothing otherwise."""
        if self.mode == "bf16":
            return torch.autocast(device_type=self.tok_emb.weight.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- forward ----------------------------------------------------------------------------

    def _ve(self, layer, ids, cache):
        if layer not in self.ve_layer_indices:
            return None
        if "ve" not in cache:
            cache["ve"] = self.ve_shared(ids)
        k = self.ve_layer_indices.index(layer)
        return cache["ve"] * self.ve_layer_scales[k].to(cache["ve"].dtype)

    def hidden(self, ids):
        """The final normed hidden states (B, T, D) of token ids (B, T)."""
        x = self.tok_emb(ids)
        if self.bigram is not None:
            x = x + self.bigram(ids)
        x = self.smear(rms_norm(x))
        x0 = x
        skips, ve_cache = [], {}
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0, v_embed=self._ve(i, ids, ve_cache))
            skips.append(x)
        for i in range(self.num_decoder_layers):
            l = self.num_encoder_layers + i
            if skips:
                x = x + self.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
            x = self.blocks[l](x, x0, v_embed=self._ve(l, ids, ve_cache))
        return rms_norm(x)

    def forward_logits(self, ids):
        """Softcapped logits (B, T, V)."""
        z = F.linear(self.hidden(ids), self.tok_emb.weight)
        return self.logit_softcap * torch.tanh(z / self.logit_softcap)

    def forward(self, ids, targets):
        """Mean cross-entropy (computed in fp32, or fp64 in fp64 mode) over all positions."""
        logits = self.forward_logits(ids)
        logits = logits if logits.dtype == torch.float64 else logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="mean")


# ----------------------------------------------------------------------------
# construction, modes, state dicts

def build_model(cfg, seed=None):
    """A GPT with the reference's init, on the CPU, float32 (the reference builds on the CPU
    too). With `seed`, the global CPU RNG is seeded right before construction, like the
    reference's torch.manual_seed(SEED); the caller's RNG state is restored afterwards."""
    if seed is None:
        return GPT(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(cfg)


def round_like_reference(model):
    """The reference casts the fresh model to bf16 and then its linear weights and control
    tensors back to fp32: every initial value becomes bf16-representable, and the three
    embedding tables stay bf16. Do the same (in place)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.data = p.data.to(torch.bfloat16)
            if name not in EMBED_NAMES:
                p.data = p.data.float()
    return model


def prepare(model, mode, device="cpu"):
    """Move the model to `device` and put it in a numeric mode (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    device = torch.device(device)
    model.to(device)
    if mode == "fp32":
        model.float()
    elif mode == "fp64":
        model.double()
    else:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.data = p.data.to(torch.bfloat16 if name in EMBED_NAMES else torch.float32)
    model.mode = mode
    IMPL["rms_norm"] = "torch" if mode == "bf16" and hasattr(F, "rms_norm") else "manual"
    IMPL["rope_short"] = "bf16" if mode == "bf16" else "fp32"
    IMPL["attention"] = "sdpa" if device.type == "cuda" and hasattr(F, "scaled_dot_product_attention") else "explicit"
    return model


def check_state_dict(cfg, sd, what="state_dict", check_order=True):
    """Names, shapes (and order) of `sd` against the config's tensor list; ValueError if off."""
    want = expected_tensors(cfg)
    want_names = [n for n, _, _ in want]
    unknown = [n for n in sd if n not in set(want_names)]
    if unknown:
        raise ValueError(f"{what}: unknown tensor {unknown[0]!r}" +
                         (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "") +
                         " for this config")
    missing = [n for n in want_names if n not in sd]
    if missing:
        raise ValueError(f"{what}: missing tensor {missing[0]!r}" +
                         (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, shape, _ in want:
        if tuple(sd[name].shape) != tuple(shape):
            raise ValueError(f"{what}: tensor {name} has shape {list(sd[name].shape)}, "
                             f"the config says {list(shape)}")
    if check_order and list(sd) != want_names:
        raise ValueError(f"{what}: tensors are not in state_dict order "
                         f"(first out of place: {next(a for a, b in zip(sd, want_names) if a != b)})")


def random_state_dict(cfg, seed=0, scale=0.05):
    """Random values for every tensor (reference dtypes), from a private generator: for tests
    and cross-checks where the real init's zeros would hide mistakes."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape, dtype in expected_tensors(cfg):
        t = torch.randn(shape, generator=g, dtype=torch.float32) * scale
        if name.rsplit(".", 1)[-1] in ("scale", "attn_scale", "mlp_scale", "resid_mix", "skip_weights", "q_gain") \
                or name.startswith("ve_layer_scales."):
            t = t + 1.0  # gains live around 1
        sd[name] = t.to(dtype)
    return sd


def model_state_for_ckpt(model, ref_dtypes=True):
    """The model's state_dict as CPU tensors, in the reference's dtypes (embeddings bf16,
    the rest fp32) or in the model's own."""
    want = {n: dt for n, _, dt in expected_tensors(model.cfg)}
    return OrderedDict((n, (t.detach().to("cpu", want[n]) if ref_dtypes else t.detach().to("cpu")).clone())
                       for n, t in model.state_dict().items())


# ----------------------------------------------------------------------------
# command line

def main(argv):
    import ckpt
    ap = argparse.ArgumentParser(prog="model.py", description="reference model: tensor list, init checkpoints")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("count", "init"):
        p = sub.add_parser(name)
        if name == "init":
            p.add_argument("out")
            p.add_argument("--seed", type=int, default=None, help="default: the config's SEED")
            p.add_argument("--random", action="store_true", help="random values instead of the init")
        p.add_argument("--preset", default="seed", choices=sorted(C.PRESETS))
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    def run():
        cfg = C.full_config(args.preset, C.parse_assignments(args.set))
        if args.cmd == "count":
            for name, shape, dtype in expected_tensors(cfg):
                print(f"{name} {ckpt.DTYPE_NAME[dtype]} {ckpt.shape_str(shape)}")
            print(f"parameters: {param_count(cfg)}")
            return 0
        seed = args.seed if args.seed is not None else C.get(cfg, "SEED")
        if args.random:
            sd = random_state_dict(cfg, seed)
        else:
            sd = model_state_for_ckpt(round_like_reference(build_model(cfg, seed)))
        cfg["SEED"] = str(seed)
        ckpt.write_ckpt(args.out, cfg, sd)
        print(f"wrote {args.out}: {len(sd)} tensors, {param_count(cfg)} parameters")
    return C.cli_run(run, 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
