"""parity_compare.py: compare the train-loss curves of two training logs (dev/parity_gpu.sh).

Both logs have step lines "step:N/M train_loss:X ..." (train_gpt and dev/ref/train.py print the
same prefix). Prints a table (every --every steps, and the last), writes both curves to a CSV, and
checks the tolerances given:

  --max-rel R        every step: |a - b| / b <= R
  --final-rel R      the mean of the last --window steps: |a - b| / b <= R
  --val A B --val-tol T   two val_bpb figures: |A - B| <= T
  --min-steps K      fewer than K common logged steps fails (default 2: one point is no curve)

A NaN or Inf loss in either log, anywhere (not only at the common steps), fails, as does, with
--max-rel, a step inside the range both logs cover that only one of them logged (every step in
that range is compared; a resumed run's log may start later than the straight one's).

  python3 dev/parity_compare.py A.log B.log --names gpu,cpu --max-rel 0.02 --csv curves.csv
Exit status 0 when every given check passes, 1 otherwise.
"""
import argparse
import math
import re
import sys

STEP = re.compile(r"^step:(\d+)/\d+ train_loss:([-+0-9.eEnaif]+)")


def curve(path):
    out = {}
    with open(path) as f:
        for line in f:
            m = STEP.match(line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
    return out


def main(argv):
    ap = argparse.ArgumentParser(prog="parity_compare.py")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", default="a,b")
    ap.add_argument("--max-rel", type=float, default=None)
    ap.add_argument("--final-rel", type=float, default=None)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--val", type=float, nargs=2, default=None)
    ap.add_argument("--val-tol", type=float, default=0.01)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--min-steps", type=int, default=2)
    args = ap.parse_args(argv)
    na, nb = args.names.split(",")
    a, b = curve(args.a), curve(args.b)
    steps = sorted(set(a) & set(b))
    bad = [(n, s, v) for n, c in ((na, a), (nb, b)) for s, v in sorted(c.items()) if not math.isfinite(v)]
    if bad:
        n, s, v = bad[0]
        print(f"FAIL {len(bad)} non-finite train losses, first: {n} step {s} = {v}")
        return 1
    if len(steps) < args.min_steps:
        print(f"FAIL only {len(steps)} common logged steps in {args.a} and {args.b} (need >= {args.min_steps})")
        return 1
    ok = True
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    only = sorted(s for s in set(a) ^ set(b) if lo <= s <= hi)
    if args.max_rel is not None and only:
        print(f"FAIL {len(only)} steps logged by only one side (first: step {only[0]}): every step must be compared")
        ok = False
    rel = {s: abs(a[s] - b[s]) / abs(b[s]) for s in steps}
    print(f"{'step':>6} {na:>10} {nb:>10} {'rel':>9}")
    for s in steps:
        if s % args.every == 0 or s == steps[0] or s == steps[-1]:
            print(f"{s:>6} {a[s]:>10.4f} {b[s]:>10.4f} {rel[s]:>9.2e}")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(f"step,{na},{nb}\n")
            for s in steps:
                f.write(f"{s},{a[s]:.6f},{b[s]:.6f}\n")
    worst = max(steps, key=lambda s: rel[s])
    print(f"steps compared: {len(steps)}  worst per-step rel {rel[worst]:.2e} at step {worst}")
    if args.max_rel is not None:
        good = rel[worst] <= args.max_rel
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} every step within {args.max_rel:g} relative")
    if args.final_rel is not None:
        last = steps[-args.window:]
        ma, mb = sum(a[s] for s in last) / len(last), sum(b[s] for s in last) / len(last)
        r = abs(ma - mb) / abs(mb)
        good = r <= args.final_rel
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} final train loss (mean of steps {last[0]}-{last[-1]}): {na} {ma:.4f} {nb} {mb:.4f} "
              f"rel {r:.2e} (tol {args.final_rel:g}); last step: {a[last[-1]]:.4f} vs {b[last[-1]]:.4f}")
    if args.val is not None:
        d = abs(args.val[0] - args.val[1])
        good = d <= args.val_tol
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} val_bpb: {na} {args.val[0]:.4f} {nb} {args.val[1]:.4f} diff {d:.4f} (tol {args.val_tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
