#!/usr/bin/env python3
"""sdpa_attention.py: PyTorch's SDPA attention kernels alone, at the seed shape, timed the way
build/dev_attention --bench-only times ours, so the two can be put side by side in one call.

  python3 dev/sdpa_attention.py [--B 48] [--T 2048] [--H 8] [--KV 4] [--hd 64] [--reps 20]
        [--backends cudnn,flash,efficient] [--gqa repeat|native]

dev/bench.sh compares attention inside a training step, where both sides run at the H200's power
cap and ours runs in a denser step (fewer idle gaps, lower clocks); this script and
dev_attention --bench-only compare the kernels alone, as FlashAttention's and cuDNN's published
rates are measured.

For each backend: the causal forward (F.scaled_dot_product_attention on (B, H, T, hd) views of
(B, T, H, hd) tensors, as dev/yardstick.py calls it) and its backward (torch.autograd.grad of the
output with a random dO; the forward that builds the graph is outside the timed region), each
timed `reps` times as dev_attention times ours (time_ms: L2 flushed, the host's dispatch kept
out of the timed region; the median) after 3 warm-up calls. FLOPs counted as dev/attention.cu
counts them: forward 4 B H T^2 hd / 2, backward 2.5x that. --gqa repeat (the default) gives SDPA
K and V already repeated to H heads, so the timed backward is the attention kernel's alone (the
repeat's gradient sum is not in it); native passes enable_gqa. A backend PyTorch refuses for
these inputs is reported as such (one line, exit status still 0 if any backend ran).

Output (grep-able):
  sdpa: backend:<name> dir:fwd|bwd ms:X TFLOP/s:Y
"""
import argparse
import sys

import torch
import torch.nn.functional as F

BACKENDS = ("cudnn", "flash", "efficient")


def time_ms(fn, reps):
    """Median ms of reps calls, each between its own two events, timed as dev/check.cuh's
    bench_ms times ours: before each call a 256 MB write flushes the L2; then a spin kernel
    (torch.cuda._sleep, ~0.5 ms) holds the GPU while Python dispatches the call, so the time
    between the events is the kernels' alone, not the host's dispatch. fn() may do untimed setup
    and return the callable to time (the backward needs a fresh forward graph each call)."""
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    events = []
    for _ in range(reps):
        run = fn()
        flush.zero_()
        torch.cuda._sleep(1_000_000)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        events.append((a, b))
    torch.cuda.synchronize()
    t = sorted(a.elapsed_time(b) for a, b in events)
    return t[len(t) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, d in (("B", 48), ("T", 2048), ("H", 8), ("KV", 4), ("hd", 64)):
        ap.add_argument(f"--{name}", type=int, default=d)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--backends", default="cudnn,flash,efficient")
    ap.add_argument("--gqa", default="repeat", choices=["repeat", "native"])
    a = ap.parse_args()
    for name in a.backends.split(","):
        if name not in BACKENDS:
            sys.exit(f"sdpa_attention.py: --backends: unknown backend '{name}' (use {', '.join(BACKENDS)})")
    if a.H % a.KV:
        sys.exit(f"sdpa_attention.py: --H {a.H} must be a multiple of --KV {a.KV}")
    if not torch.cuda.is_available():
        sys.exit("sdpa_attention.py: needs a CUDA GPU (torch.cuda.is_available() is False)")
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        sys.exit(f"sdpa_attention.py: needs torch >= 2.2 (torch.nn.attention.sdpa_kernel); this is torch {torch.__version__}")
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    B, T, H, KV, hd = a.B, a.T, a.H, a.KV, a.hd
    kvh = H if a.gqa == "repeat" else KV
    q = torch.randn(B, T, H, hd, device=dev, dtype=dt)
    k = torch.randn(B, T, kvh, hd, device=dev, dtype=dt)
    v = torch.randn(B, T, kvh, hd, device=dev, dtype=dt)
    dout = torch.randn(B, H, T, hd, device=dev, dtype=dt)
    kw = {"enable_gqa": True} if kvh != H else {}
    fwd_flops = 4.0 * B * H * T * T * hd / 2
    print(f"sdpa: torch {torch.__version__} {torch.cuda.get_device_name()} B{B} T{T} H{H} KV{KV} hd{hd} causal "
          f"gqa:{a.gqa} reps:{a.reps}", flush=True)
    ran = 0
    for name in a.backends.split(","):
        qt, kt, vt = (x.transpose(1, 2).detach().requires_grad_() for x in (q, k, v))

        def fwd():
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, **kw)

        try:
            with sdpa_kernel([backend[name]]):
                for _ in range(3):  # warm-up (and the refusal, if this backend cannot run these inputs)
                    y = fwd()
                    torch.autograd.grad(y, (qt, kt, vt), dout)
                torch.cuda.synchronize()
                ms_f = time_ms(lambda: (lambda: fwd()), a.reps)

                def bwd_setup():
                    y = fwd()
                    return lambda: torch.autograd.grad(y, (qt, kt, vt), dout)

                ms_b = time_ms(bwd_setup, a.reps)
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"sdpa: backend:{name} not available for these inputs ({first})", flush=True)
            continue
        ran += 1
        print(f"sdpa: backend:{name} dir:fwd ms:{ms_f:.4f} TFLOP/s:{fwd_flops / ms_f / 1e9:.1f}", flush=True)
        print(f"sdpa: backend:{name} dir:bwd ms:{ms_b:.4f} TFLOP/s:{2.5 * fwd_flops / ms_b / 1e9:.1f}", flush=True)
    if not ran:
        sys.exit("sdpa_attention.py: no backend ran")


if __name__ == "__main__":
    main()
