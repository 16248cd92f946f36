"""build/ema_tool's schedule against the formula: decay_t = min(EMA_DECAY, (1+t)/(10+t)) with
EMA_WARMUP=1, EMA_DECAY at every step without; the EMA of a known sequence.

    ema_check.py EMA_TOOL
"""
import subprocess, sys

def eval_w0(ds, n):
    w = 1.0
    for d in ds[:n]:
        w *= d
    return w


tool = sys.argv[1]
for decay, warm, steps in [(0.997, 1, 4000), (0.997, 0, 50), (0.9, 1, 200), (0.0, 1, 5), (1.0, 1, 30)]:
    out = subprocess.run([tool, str(decay), str(warm), str(steps)], capture_output=True, text=True, check=True).stdout.split("\n")
    ds = [float(l.split()[1]) for l in out[:steps]]
    want = [min(decay, (1.0 + t) / (10.0 + t)) if warm else decay for t in range(steps)]
    assert ds == want, (decay, warm, next(i for i in range(steps) if ds[i] != want[i]))
    w0, ema = 1.0, 0.0
    for t, d in enumerate(want):
        w0 *= d
        ema = d * ema + (1 - d) * (t + 1)
    got_w0, got_ema = float(out[steps].split()[1]), float(out[steps + 1].split()[1])
    assert abs(got_w0 - w0) <= 1e-12 * w0 + 1e-300, (got_w0, w0)
    assert abs(got_ema - ema) <= 1e-5 * abs(ema) + 1e-6, (got_ema, ema)  # ema_update_cpu stores fp32
    if warm and decay == 0.997:
        first = next(t for t in range(steps) if want[t] == decay)
        assert first == 2990, first  # (1+t)/(10+t) >= 0.997 from t = 2990 on
        print(f"EMA_WARMUP=1 EMA_DECAY=0.997: decay 0.1 at t=0, 0.997 from t={first}; "
              f"after 400 steps the initial weights keep {eval_w0(want, 400):.3g} of the average "
              f"(without the warmup: {0.997 ** 400:.3g})")
print("schedule ok")


