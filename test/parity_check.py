"""parity_check.py: the C++ CPU reference against the PyTorch reference (dev/ref), in float32.

  parity_check.py grads INIT.ckpt DATA_DIR B T CPP_OUT.ckpt
      loss and logits within 1e-5 relative, every gradient within 1e-4 (relative to the tensor's
      largest gradient), on the same weights and the first B*T+1 train tokens.
  parity_check.py train CPP_STATE.ckpt PY_OUT.ckpt PY_EMA.ckpt
      after the same training steps: every parameter and every EMA tensor within 1e-4
      (max abs difference relative to the tensor's max abs value).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "ref"))
import ckpt  # noqa: E402
import train as T  # noqa: E402


def rel(a, b):
    """max |a - b| / max |b| (0 when both are 0)."""
    den = b.abs().max().item()
    d = (a - b).abs().max().item()
    return d / den if den > 0 else d


def grads(init, data_dir, B, Tn, cpp_out):
    model, cfg = T.load_model(init, "cpu", "fp32")
    files = T.shard_files(data_dir, "train")
    stream = T.TokenStream(files)
    tok = stream.take(B * Tn + 1).long()
    x, y = tok[:-1].reshape(B, Tn), tok[1:].reshape(B, Tn)
    model.zero_grad()
    loss = model(x, y)
    loss.backward()
    logits = model.forward_logits(x).float()
    _, cpp = ckpt.read_ckpt(cpp_out)
    ok = True
    lrel = abs(cpp["loss"].item() - loss.item()) / abs(loss.item())
    print(f"loss      torch {loss.item():.7f}  c++ {cpp['loss'].item():.7f}  rel {lrel:.2e}")
    ok &= lrel < 1e-5
    r = rel(cpp["logits"], logits)
    print(f"logits    max rel {r:.2e}")
    ok &= r < 1e-5
    worst = 0.0
    for name, p in model.named_parameters():
        g = cpp["grad/" + name]
        r = rel(g, p.grad.float())
        worst = max(worst, r)
        if r >= 1e-4:
            print(f"  FAIL grad {name}: rel {r:.2e}")
            ok = False
    print(f"gradients {sum(1 for _ in model.parameters())} tensors, worst rel {worst:.2e}")
    return ok


def train(cpp_state, py_out, py_ema):
    _, st = ckpt.read_ckpt(cpp_state)
    _, w = ckpt.read_ckpt(py_out)
    _, e = ckpt.read_ckpt(py_ema)
    ok, worst_w, worst_e = True, 0.0, 0.0
    for name, t in w.items():
        rw = rel(st[name].float(), t.float())
        re_ = rel(st["ema/" + name].float(), e[name].float())
        worst_w, worst_e = max(worst_w, rw), max(worst_e, re_)
        if rw >= 1e-4 or re_ >= 1e-4:
            print(f"  FAIL {name}: params rel {rw:.2e} ema rel {re_:.2e}")
            ok = False
    print(f"params {len(w)} tensors worst rel {worst_w:.2e}; EMA worst rel {worst_e:.2e}")
    return ok


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "grads":
        ok = grads(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif cmd == "train":
        ok = train(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {cmd}")
    sys.exit(0 if ok else 1)
