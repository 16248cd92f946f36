"""ref_checks.py: the checks of the Python reference (dev/ref/, dev/convert_checkpoint.py), run by
test/test_ref.sh one sub-command at a time:

  python3 test/ref_checks.py roundtrip_tiny DIR    .pt -> pt2ckpt -> ckpt2pt: bit-identical, same
                                                   names/order/dtypes, inferred config right,
                                                   and ckpt rewrite is byte-identical
  python3 test/ref_checks.py roundtrip_seed DIR    the same at the seed shapes (27.9M random
                                                   values) + the two presets' parameter counts
  python3 test/ref_checks.py make_bad DIR          damaged .ckpt files and bad state_dicts
  python3 test/ref_checks.py reject_all DIR        each is refused with the right one-line message
  python3 test/ref_checks.py model_cpu             forward/backward fp32 + fp64, loss ~ ln V at
                                                   init, directional-derivative gradient check
  python3 test/ref_checks.py schedules             lr_mul, momentum warmup, NS5, sliding windows
  python3 test/ref_checks.py train_cpu             loss falls on a repeated batch; EMA; late QAT
  python3 test/ref_checks.py make_data DIR         tiny synthetic train/val shards + init ckpt
  python3 test/ref_checks.py loader DIR            TokenStream order across shards and wrap
Each prints what it checked and exits non-zero (with the reason) on the first failure.
"""
import math
import os
import struct
import contextlib
import io
import sys
import zlib
from collections import OrderedDict

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "dev", "ref"))
import ckpt  # noqa: E402
import config as C  # noqa: E402
import model as M  # noqa: E402
import train as T  # noqa: E402
import eval as E  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "dev"))
import convert_checkpoint  # noqa: E402

CLIS = {"convert": convert_checkpoint, "ckpt": ckpt}
# a tiny config with every feature on: GQA, XSA on 2 layers, VE on layer 2, bigram, partial RoPE
TINY = dict(NUM_LAYERS="3", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", VE_ENABLED="1",
            VE_LAYERS="2", VE_DIM="16", BIGRAM_VOCAB_SIZE="64", BIGRAM_DIM="16", XSA_LAST_N="2",
            ROPE_DIMS="8")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def tiny_cfg(**over):
    return C.full_config("record", {**TINY, **over})


def run(script, *args):
    """Run a CLI's main(argv) in this process (saves a torch import per call); its stdout."""
    mod = CLIS[script]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = mod.main(list(args))
    if rc != 0:
        fail(f"{script} {' '.join(args)} exited {rc}")
    return buf.getvalue()


def same_state(a, b, what):
    expect(list(a) == list(b), f"{what}: names/order differ")
    for n in a:
        expect(a[n].dtype == b[n].dtype, f"{what}: {n} dtype {a[n].dtype} vs {b[n].dtype}")
        expect(a[n].shape == b[n].shape, f"{what}: {n} shape {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        expect(ckpt.tensor_to_bytes(a[n]) == ckpt.tensor_to_bytes(b[n]), f"{what}: {n} values differ")


def roundtrip(cfg, d, tag, ve_layers):
    sd = M.random_state_dict(cfg, seed=7)
    pt, ck, pt2, ck2 = (os.path.join(d, f"{tag}{s}") for s in (".pt", ".ckpt", "_back.pt", "_again.ckpt"))
    torch.save(sd, pt)
    run("convert", "pt2ckpt", pt, ck, "--ve-layers", ve_layers, "--xsa-last-n", cfg["XSA_LAST_N"],
        "--rope-dims", cfg["ROPE_DIMS"], "--mlp-quant-bits", cfg["MLP_QUANT_BITS"])
    run("convert", "ckpt2pt", ck, pt2)
    back = torch.load(pt2)
    expect(isinstance(back, OrderedDict), "ckpt2pt did not write an OrderedDict")
    same_state(sd, back, f"{tag} .pt -> .ckpt -> .pt")
    file_cfg, tensors = ckpt.read_ckpt(ck)
    same_state(sd, tensors, f"{tag} .ckpt contents")
    irrelevant = (["BIGRAM_DIM"] if C.get(cfg, "BIGRAM_VOCAB_SIZE") == 0 else []) + \
        (["VE_DIM", "VE_LAYERS"] if not C.get(cfg, "VE_ENABLED") else [])
    for k in C.MODEL_KEYS:
        if k in irrelevant:
            continue
        expect(C.get(file_cfg, k) == C.get(cfg, k), f"{tag}: inferred {k}={file_cfg.get(k)}, want {cfg[k]}")
    run("ckpt", "rewrite", ck, ck2)
    expect(open(ck, "rb").read() == open(ck2, "rb").read(), f"{tag}: ckpt rewrite is not byte-identical")
    return sd


def cmd_roundtrip_tiny(d):
    cfg = tiny_cfg()
    sd = roundtrip(cfg, d, "tiny", "2")
    m = M.build_model(cfg, seed=1)
    expect(list(m.state_dict()) == list(sd), "GPT.state_dict() order differs from expected_tensors")
    m.load_state_dict(sd)  # strict: names and shapes fit the module
    # a config without bigram and VE, and an odd layer count
    cfg2 = tiny_cfg(NUM_LAYERS="5", BIGRAM_VOCAB_SIZE="0", VE_ENABLED="0")
    roundtrip(cfg2, d, "plain", "9,10")
    # dump lists every tensor with the crc of its bytes
    out = run("ckpt", "dump", os.path.join(d, "tiny.ckpt"))
    lines = [l for l in out.splitlines() if l.startswith("tensor ")]
    expect(len(lines) == len(sd), "dump: one line per tensor")
    expect(lines[1] == f"tensor tok_emb.weight bf16 (1024,64) {ckpt.data_crc(sd['tok_emb.weight']):08x}",
           f"dump line: {lines[1]}")
    print(f"ok: tiny ({len(sd)} tensors) and no-bigram/no-VE round trips are bit-exact")


def cmd_roundtrip_seed(d):
    seed, record = C.full_config("seed"), C.full_config("record")
    expect(M.param_count(seed) == 27878489, f"seed preset has {M.param_count(seed)} parameters")
    expect(M.param_count(record) == 26993756, f"record preset has {M.param_count(record)} parameters")
    sd = roundtrip(seed, d, "seed", "9,10")
    expect(sum(t.numel() for t in sd.values()) == 27878489, "seed state_dict size")
    print("ok: seed-shape round trip bit-exact; parameter counts 27878489 (seed) 26993756 (record)")


BAD_CKPT = {"truncated": "truncated", "crc": "crc mismatch", "magic": "bad magic",
            "version": "unsupported version 2", "trailing": "1 trailing bytes", "duplicate": "duplicate tensor name 'a'",
            "dtype": "unknown dtype code 9", "ndim": "ndim 5 > 4"}
BAD_PT = {"unknown": "unknown tensor 'blocks.0.attn.extra'", "missing": "missing tensor 'smear.gate'",
          "shape": "blocks.1.mlp.proj.weight has shape", "velayers": "ve_layer_scales tensors but --ve-layers"}


def cmd_make_bad(d):
    """bad_<kind>.ckpt for every kind of BAD_CKPT and bad_<kind>.pt for BAD_PT, in d."""
    for kind in BAD_CKPT:
        write_bad_ckpt(kind, os.path.join(d, f"bad_{kind}.ckpt"))
    sd = M.random_state_dict(tiny_cfg(), seed=1)
    variants = {"unknown": {**sd, "blocks.0.attn.extra": torch.zeros(3)},
                "missing": OrderedDict((n, t) for n, t in sd.items() if n != "smear.gate"),
                "shape": {**sd, "blocks.1.mlp.proj.weight": torch.zeros(64, 100)},
                "velayers": sd}  # converted with --ve-layers 9,10: two layers, one scale
    for kind, v in variants.items():
        torch.save(v, os.path.join(d, f"bad_{kind}.pt"))
    print(f"ok: bad files in {d}")


def cmd_reject_all(d):
    """Every bad file is refused with its own message (the library and the CLIs)."""
    for kind, msg in BAD_CKPT.items():
        path = os.path.join(d, f"bad_{kind}.ckpt")
        try:
            ckpt.read_ckpt(path)
            fail(f"bad_{kind}.ckpt was accepted")
        except ValueError as e:
            expect(str(e).startswith(path + ": ") and msg in str(e) and "\n" not in str(e),
                   f"bad_{kind}.ckpt: message {e!r}, want {msg!r}")
    for kind, msg in BAD_PT.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = convert_checkpoint.main(["pt2ckpt", os.path.join(d, f"bad_{kind}.pt"), os.path.join(d, "x.ckpt"),
                                          "--ve-layers", "2" if kind != "velayers" else "9,10"])
        expect(rc == 1 and msg in err.getvalue() and err.getvalue().startswith("error: "),
               f"pt2ckpt bad_{kind}.pt: rc {rc}, stderr {err.getvalue()!r}, want {msg!r}")
    # ckpt2pt checks the shapes against the file's own config
    sd = M.random_state_dict(tiny_cfg(), seed=1)
    path = os.path.join(d, "wrongcfg.ckpt")
    ckpt.write_ckpt(path, tiny_cfg(MLP_MULT="2"), sd)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc = convert_checkpoint.main(["ckpt2pt", path, os.path.join(d, "x.pt")])
    expect(rc == 1 and "has shape" in err.getvalue(), f"ckpt2pt with a wrong config: {err.getvalue()!r}")
    print(f"ok: {len(BAD_CKPT)} damaged .ckpt files and {len(BAD_PT) + 1} bad conversions refused clearly")


def write_bad_ckpt(kind, out):
    sd = M.random_state_dict(tiny_cfg(NUM_LAYERS="1", VE_LAYERS="0"), seed=1)
    good = ckpt.encode_ckpt({"NUM_LAYERS": "1"}, sd)
    if kind == "truncated":
        data = good[:len(good) // 2]
    elif kind == "crc":
        b = bytearray(good)
        b[len(b) // 2] ^= 0x01  # inside tensor data
        data = bytes(b)
    elif kind == "magic":
        data = b"PGCKPT\n\n" + good[8:]
    elif kind == "version":
        data = good[:8] + struct.pack("<I", 2) + good[12:]
    elif kind == "trailing":
        data = good + b"\0"
    else:  # hand-built files: duplicate names, bad dtype, bad ndim (with a valid crc)
        def tensor(name, code, dims, payload):
            nb = name.encode()
            return struct.pack("<H", len(nb)) + nb + struct.pack("<BB", code, len(dims)) + \
                struct.pack(f"<{len(dims)}Q", *dims) + payload
        one = tensor("a", 0, [1], b"\0\0\0\0")
        bodies = {"duplicate": [one, one], "dtype": [tensor("a", 9, [1], b"\0")],
                  "ndim": [tensor("a", 3, [1, 1, 1, 1, 1], b"\0")]}
        if kind not in bodies:
            fail(f"unknown bad kind {kind}")
        body = ckpt.MAGIC + struct.pack("<II", 1, 0) + struct.pack("<I", len(bodies[kind])) + b"".join(bodies[kind])
        data = body + struct.pack("<I", zlib.crc32(body))
    with open(out, "wb") as f:
        f.write(data)


def cmd_model_cpu():
    cfg = tiny_cfg()
    V = C.get(cfg, "VOCAB_SIZE")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (2, 48), generator=g)
    tgt = torch.randint(0, V, (2, 48), generator=g)
    # the real init: logits are tiny, so the loss is ~ ln V
    m = M.prepare(M.build_model(cfg, seed=1337), "fp32")
    loss = m(ids, tgt)
    loss.backward()
    expect(abs(loss.item() - math.log(V)) < 0.05, f"init loss {loss.item():.4f}, want ~ln V = {math.log(V):.4f}")
    expect(all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None), "non-finite grad")
    # random weights (every path live): fp32 vs fp64 forward, and the fp64 gradient against a
    # central finite difference along a random direction
    sd = M.random_state_dict(cfg, seed=3)
    m32 = M.build_model(cfg)
    m32.load_state_dict(sd)
    M.prepare(m32, "fp32")
    m64 = M.build_model(cfg)
    m64.load_state_dict(sd)
    M.prepare(m64, "fp64")
    l32, l64 = m32(ids, tgt), m64(ids, tgt)
    expect(l64.dtype == torch.float64, "fp64 mode loss is not float64")
    expect(math.isfinite(l32.item()) and abs(l32.item() - l64.item()) < 1e-4 * abs(l64.item()),
           f"fp32 loss {l32.item()} vs fp64 {l64.item()}")
    l64.backward()
    params = [p for p in m64.parameters()]
    dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    analytic = sum((p.grad * d).sum() for p, d in zip(params, dirs)).item()
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, dirs):
            p.add_(d, alpha=eps)
        lp = m64(ids, tgt).item()
        for p, d in zip(params, dirs):
            p.add_(d, alpha=-2 * eps)
        lm = m64(ids, tgt).item()
    numeric = (lp - lm) / (2 * eps)
    expect(abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)),
           f"gradient check: analytic {analytic:.10g} vs finite difference {numeric:.10g}")
    # QAT: the forward changes, the gradient still reaches the weights
    m32.zero_grad()
    m32.set_qat(True)
    lq = m32(ids, tgt)
    lq.backward()
    expect(abs(lq.item() - l32.item()) > 1e-6, "QAT did not change the forward")
    expect(m32.blocks[0].attn.c_q.weight.grad.abs().sum() > 0, "QAT blocked the gradient")
    m32.eval()
    expect(abs(m32(ids, tgt).item() - l32.item()) < 1e-6, "QAT must be off in eval mode")
    # sequences longer than 1024 take the NTK RoPE branch
    long_ids = torch.randint(0, V, (1, 1100), generator=g)
    expect(math.isfinite(m32(long_ids, long_ids).item()), "T > 1024 forward")
    print(f"ok: init loss {loss.item():.4f} (ln V {math.log(V):.4f}); fp32/fp64 agree; "
          f"grad check {analytic:.8g} vs {numeric:.8g}; QAT straight-through")


def cmd_schedules():
    # iteration schedule: 1, then linear to 0 over the last WARMDOWN_ITERS iterations
    expect(T.lr_mul_iters(0, 100, 20) == 1.0 and T.lr_mul_iters(79, 100, 20) == 1.0, "lr_mul_iters before warmdown")
    expect(T.lr_mul_iters(80, 100, 20) == 1.0 and abs(T.lr_mul_iters(90, 100, 20) - 0.5) < 1e-12, "lr_mul_iters in warmdown")
    expect(T.lr_mul_iters(100, 100, 20) == 1.0 and T.lr_mul_iters(5, 100, 0) == 1.0, "lr_mul_iters edges")
    # wallclock: 100 ms/step, cap 600 s, W = 3500 -> warmdown starts when 350 s are left
    expect(T.lr_mul_wallclock(2000, 200000.0, 3500, 600000.0) == 1.0, "wallclock: early")
    expect(abs(T.lr_mul_wallclock(4000, 400000.0, 3500, 600000.0) - 200000.0 / 350000.0) < 1e-12, "wallclock: warmdown")
    expect(T.lr_mul_wallclock(6000, 600000.0, 3500, 600000.0) == 0.0, "wallclock: at the cap")
    expect(T.lr_mul_wallclock(0, 0.0, 3500, 600000.0) == 1.0, "wallclock: step 0")
    cfg = C.full_config("seed")
    expect(abs(T.muon_momentum(0, cfg) - 0.92) < 1e-12 and abs(T.muon_momentum(750, cfg) - 0.955) < 1e-12
           and T.muon_momentum(1500, cfg) == 0.99 and T.muon_momentum(9000, cfg) == 0.99, "muon momentum ramp")
    # Newton-Schulz: singular values land near 1 (the quintic's band is roughly [0.7, 1.2])
    G = torch.randn(48, 80, generator=torch.Generator().manual_seed(1))
    for dt in (torch.float32, torch.bfloat16):
        for X in (T.newton_schulz5(G, 5, dt), T.newton_schulz5(G.T, 5, dt)):
            expect(X.dtype == dt, "NS output dtype")
            s = torch.linalg.svdvals(X.float())
            expect(0.5 < s.min().item() and s.max().item() < 1.3, f"NS5 singular values {s.min():.3f}..{s.max():.3f}")
    # sliding windows: N = 300 tokens (299 targets), seq 128, stride 64
    w = E.sliding_windows(300, 128, 64)
    expect([x[0] for x in w] == [0, 64, 128, 192, 256], f"window starts {w}")
    expect(w[0] == (0, 128, 0) and w[1] == (64, 128, 64) and w[3] == (192, 107, 43) and w[4] == (256, 43, 0),
           f"window lengths / first scored {w}")
    scored = [ws + p for ws, wlen, s in w for p in range(s, wlen)]
    expect(set(scored) == set(range(299)), "every target scored at least once")
    expect(len(scored) - 299 == (256 - 235) + 43, "the tail re-scoring quirk")
    print("ok: lr_mul (iterations, wallclock), momentum ramp, NS5, sliding windows")


def cmd_train_cpu():
    cfg = tiny_cfg(MAX_WALLCLOCK_SECONDS="0", ITERATIONS="12", WARMDOWN_ITERS="10")
    m = M.prepare(M.round_like_reference(M.build_model(cfg, seed=1337)), "fp32")
    groups = T.param_groups(m)
    names = {g: [n for n, _ in ps] for g, ps in groups.items()}
    expect(sorted(sum(names.values(), [])) == sorted(n for n, _ in m.named_parameters()), "groups cover each param once")
    expect(names["embed"] == ["tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"], f"embed group {names['embed']}")
    expect("bigram.proj.weight" in names["muon"] and "blocks.0.resid_mix" in names["scalar"]
           and "skip_weights" in names["scalar"] and "ve_layer_scales.0" in names["scalar"], "group membership")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 1024, (4, 32), generator=g)
    y = torch.roll(x, -1, dims=1)
    batch = [(x[:2], y[:2]), (x[2:], y[2:])]  # two micro-batches
    losses, tr = T.train_steps(m, lambda s: batch, 12, cfg, elapsed_ms=None)
    expect(all(math.isfinite(l) for l in losses), f"losses {losses}")
    expect(losses[-1] < losses[0] - 0.5, f"loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}")
    # late QAT: lr_mul = (12 - s)/10 < 0.15 first at s = 11
    expect(tr.qat_step == 11 and m.qat, f"late QAT switched on at {tr.qat_step}")
    # EMA: after 12 steps from the init, e = 0.997^12 * init + ...: between init and now
    w = m.blocks[0].attn.c_q.weight
    e = tr.ema.state["blocks.0.attn.c_q.weight"]
    expect(e.dtype == torch.float32 and not torch.equal(e, w.detach()), "EMA state")
    # the same run with bf16 Newton-Schulz (the reference's) also learns
    m2 = M.prepare(M.round_like_reference(M.build_model(cfg, seed=1337)), "fp32")
    l2, _ = T.train_steps(m2, lambda s: batch, 4, cfg, trainer=T.Trainer(m2, cfg, ns_dtype=torch.bfloat16))
    expect(l2[-1] < l2[0] - 0.3, f"bf16-NS run: {l2[0]:.4f} -> {l2[-1]:.4f}")
    print(f"ok: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 12 steps; late QAT at step 11; EMA; bf16 NS")


def write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def cmd_make_data(d):
    """Two train shards of a repeating pattern, one val shard, a tiny init checkpoint."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    phrase = rng.integers(2, 1024, size=50)
    stream = np.concatenate([[1], np.tile(phrase, 200)])[:9000]  # BOS, then a repeated "document"
    write_shard(os.path.join(d, "fineweb_train_000000.bin"), stream[:5000])
    write_shard(os.path.join(d, "fineweb_train_000001.bin"), stream[5000:])
    write_shard(os.path.join(d, "fineweb_val_000000.bin"), np.concatenate([[1], np.tile(phrase, 30)]))
    cfg = tiny_cfg()
    sd = M.model_state_for_ckpt(M.round_like_reference(M.build_model(cfg, seed=1337)))
    ckpt.write_ckpt(os.path.join(d, "init.ckpt"), cfg, sd)
    print(f"ok: data and init.ckpt in {d}")


def cmd_loader(d):
    a = np.arange(0, 300) % 1024
    b = np.arange(300, 500) % 1024
    write_shard(os.path.join(d, "fineweb_train_000001.bin"), b)  # written first: order is by name
    write_shard(os.path.join(d, "fineweb_train_000000.bin"), a)
    full = np.concatenate([a, b])
    cfg = C.full_config("seed", dict(TRAIN_BATCH_TOKENS="128", TRAIN_SEQ_LEN="8"))
    stream = T.TokenStream(T.shard_files(d, "train"))
    pos = 0
    for step in range(4):  # 4 steps x 8 micro x 17 tokens = 544 > 500: wraps
        for x, y in T.next_micro_batches(stream, cfg, world_size=1):
            want = np.take(full, np.arange(pos, pos + 17), mode="wrap")
            expect(x.shape == (2, 8) and np.array_equal(x.reshape(-1).numpy(), want[:-1])
                   and np.array_equal(y.reshape(-1).numpy(), want[1:]), f"micro-batch at stream pos {pos}")
            pos += 17
    # two ranks: each micro-step takes 2 * (8 + 1) tokens, rank r the r-th slice
    cfg2 = C.full_config("seed", dict(TRAIN_BATCH_TOKENS="64", TRAIN_SEQ_LEN="8"))
    mb = T.next_micro_batches(T.TokenStream(T.shard_files(d, "train")), cfg2, world_size=2)
    expect(len(mb) == 8 and mb[1][0][0, 0].item() == 9 and mb[2][0][0, 0].item() == 18, "2-rank slicing")
    bad = os.path.join(d, "bad")
    os.makedirs(bad, exist_ok=True)
    write_shard(os.path.join(bad, "fineweb_train_000000.bin"), a)
    with open(os.path.join(bad, "fineweb_train_000000.bin"), "ab") as f:
        f.write(b"\0")
    try:
        T.load_shard(os.path.join(bad, "fineweb_train_000000.bin"))
        fail("a padded shard was accepted")
    except ValueError as e:
        expect("size" in str(e), f"padded shard message: {e}")
    print("ok: stream order by name, wrap, rank slices, shard size check")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = globals().get("cmd_" + cmd)
    if fn is None:
        fail(f"unknown check {cmd}")
    fn(*args)
