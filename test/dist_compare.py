"""dist_compare.py: compares runs of ./train_gpt at different world sizes (test/test_dist.sh).

  dist_compare.py losses LOG_A LOG_B TOL [FIRST_STEP]
      the train_loss of every step line both logs have (from FIRST_STEP on) within TOL (absolute);
      prints the largest difference.
  dist_compare.py ckpt A.ckpt B.ckpt TOL
      every tensor of A within TOL of B's (max |a - b| / max |b|); prints the largest.
  dist_compare.py bpb LOG_A LOG_B TOL
      every `<tag>_exact val_loss:X val_bpb:Y` line of A equals B's within TOL (relative).
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "ref"))


def step_losses(path, first):
    out = {}
    for m in re.finditer(r"^step:(\d+)/\d+ train_loss:([0-9.naif]+)", open(path).read(), re.M):
        if int(m.group(1)) >= first:
            out[int(m.group(1))] = float(m.group(2))
    return out


def main(argv):
    mode = argv[1]
    if mode == "losses":
        a, b = step_losses(argv[2], int(argv[5]) if len(argv) > 5 else 0), step_losses(argv[3], int(argv[5]) if len(argv) > 5 else 0)
        common = sorted(set(a) & set(b))
        if not common:
            sys.exit("no common step lines")
        worst = max(abs(a[s] - b[s]) for s in common)
        print(f"{len(common)} steps ({common[0]}..{common[-1]}), max |loss difference| {worst:.3g} (tolerance {argv[4]})")
        sys.exit(0 if worst <= float(argv[4]) else 1)
    if mode == "ckpt":
        import ckpt  # dev/ref/ckpt.py (torch)
        _, ta = ckpt.read_ckpt(argv[2])
        _, tb = ckpt.read_ckpt(argv[3])
        worst, where = 0.0, ""
        for name, t in tb.items():
            a, b = ta[name].double(), t.double()
            den = b.abs().max().item()
            d = (a - b).abs().max().item() / (den if den > 0 else 1.0)
            if not d <= worst:  # (NaN counts as the worst)
                worst, where = d, name
        print(f"{len(tb)} tensors, max relative difference {worst:.3g} ({where}) (tolerance {argv[4]})")
        sys.exit(0 if worst <= float(argv[4]) else 1)
    if mode == "bpb":
        pat = re.compile(r"^(\S+)_exact val_loss:(\S+) val_bpb:(\S+)", re.M)
        a = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in pat.finditer(open(argv[2]).read())}
        b = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in pat.finditer(open(argv[3]).read())}
        if not b or set(a) != set(b):
            sys.exit(f"eval lines differ: {sorted(a)} vs {sorted(b)}")
        worst = max(abs(a[k][i] - b[k][i]) / abs(b[k][i]) for k in b for i in (0, 1))
        print(f"{len(b)} evals {sorted(b)}, max relative difference {worst:.3g} (tolerance {argv[4]})")
        sys.exit(0 if worst <= float(argv[4]) else 1)
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
