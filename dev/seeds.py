#!/usr/bin/env python3
"""seeds.py: the same training config over several seeds, and the challenge's statistics.

    dev/seeds.py run --seeds 1337,42,2025 [--prefix NAME] [--dry-run] [-- ./train_gpt ARGS...]
        runs ./train_gpt once per seed, one after another, with SEED=s RUN_ID=<prefix>_seed<s>
        OUT_DIR=runs/<prefix>_seed<s> (the rest of the config from your environment and ARGS),
        then prints the report below for the logs it wrote.
    dev/seeds.py report LOG... [--baseline-logs LOG... | --baseline-nats X,Y,.. | --baseline-bpb X,Y,..]
        reads each log's final figures and prints a table, mean and standard deviation, and with a
        baseline the one-sided Welch t-test of the challenge's rule.

The challenge's rule: a new record must lower val_loss (nats per token, the sliding-window
figure when the run has one) by at least 0.005 against the current record, at p < 0.01. So the
test here is H0: improvement <= 0.005 against H1: improvement > 0.005, where improvement =
mean(baseline) - mean(new), t = (improvement - 0.005) / sqrt(s_b^2/n_b + s_n^2/n_n) with Welch's
degrees of freedom, p = P(T_df >= t). A baseline given as one number is taken as exact (its
variance term is 0: a one-sample test with n-1 degrees of freedom). Baseline bpb values are
turned into nats with the bpb/nats ratio of the new logs (same val set, same tokenizer).

Runs go one after another; `gpu_groups` below is the hook for running several at once on
disjoint GPU sets (CUDA_VISIBLE_DEVICES per run) once multi-GPU training exists.
The Student t distribution is computed here (regularized incomplete beta, continued fraction),
so no scipy is needed.
"""
import math, os, re, subprocess, sys

MARGIN_NATS = 0.005
ALPHA = 0.01

# ---------------------------------------------------------------------------------------------
# statistics


def betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),          # even step
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):  # odd step
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a} b={b} x={x}")


def betainc(a, b, x, y):
    """Regularized incomplete beta I_x(a, b); y = 1 - x, passed in so that it keeps its precision
    when x is close to 1."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    lnfront = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lnfront) * betacf(a, b, x) / a
    return 1.0 - math.exp(lnfront) * betacf(b, a, y) / b  # the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)


def t_sf(t, df):
    """P(T > t) for Student's t with df (> 0, may be fractional) degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))  # P(|T| > |t|) / 2
    return tail if t > 0 else 1.0 - tail


def mean_std(xs):
    n = len(xs)
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s


def welch_improvement_test(new, base, margin=MARGIN_NATS):
    """One-sided Welch test of H0: mean(base) - mean(new) <= margin. Returns a dict."""
    if len(new) < 2:
        raise ValueError("need at least 2 new runs for a t-test")
    mn, sn = mean_std(new)
    mb, sb = mean_std(base)
    vn, vb = sn * sn / len(new), (sb * sb / len(base) if len(base) > 1 else 0.0)
    se = math.sqrt(vn + vb)
    imp = mb - mn
    if se == 0:
        t, df = (math.inf if imp > margin else -math.inf), float(len(new) - 1)
    else:
        t = (imp - margin) / se
        df = (vn + vb) ** 2 / (vn * vn / (len(new) - 1) + (vb * vb / (len(base) - 1) if len(base) > 1 else 0.0))
    p = t_sf(t, df)
    return dict(improvement=imp, margin=margin, t=t, df=df, p=p, significant=p < ALPHA, se=se)


# ---------------------------------------------------------------------------------------------
# logs

FIGURES = [  # (key, line tag) as train_gpt.cu prints them
    ("post_ema", "final_float_fixed_exact"),
    ("roundtrip", "final_int6_roundtrip_exact"),
    ("sliding", "final_int6_sliding_window_exact"),
]
NUM = r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def parse_log(path):
    """The final figures of one train_gpt log: seed, steps, sizes, and for each of FIGURES
    (val_loss, val_bpb). Raises ValueError naming the file when the run did not finish."""
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {"path": path}
    m = re.search(r"^seed:(\d+)$", text, re.M)
    out["seed"] = int(m.group(1)) if m else None
    for key, tag in FIGURES:
        m = re.search(rf"^{tag} val_loss:{NUM} val_bpb:{NUM}", text, re.M)
        out[key] = (float(m.group(1)), float(m.group(2))) if m else None
    steps = re.findall(r"^step:(\d+)/(\d+) val_loss", text, re.M)
    out["steps"] = int(steps[-1][0]) if steps else None
    times = re.findall(r"^step:\d+/\d+ val_loss:\S+ val_bpb:\S+ train_time:(\d+)ms step_avg:([0-9.]+)ms", text, re.M)
    out["train_ms"] = int(times[-1][0]) if times else None
    out["step_avg_ms"] = float(times[-1][1]) if times else None
    m = re.search(r"^Serialized model int6\+zstd: (\d+) bytes", text, re.M)
    out["artifact_bytes"] = int(m.group(1)) if m else None
    m = re.search(r"^Code size: (\d+) bytes.*?: (.*)$", text, re.M)
    out["code_bytes"], out["code_files"] = (int(m.group(1)), m.group(2).split()) if m else (None, [])
    m = re.search(r"^Total submission size int6\+zstd: (\d+) bytes", text, re.M)
    out["total_bytes"] = int(m.group(1)) if m else None
    out["config"] = parse_config_table(text)
    if out["roundtrip"] is None:
        raise ValueError(f"{path}: no final_int6_roundtrip_exact line (the run did not finish, or it was --train-only)")
    return out


def parse_config_table(text):
    """{ENV: (value, source)} from the boxed config table at the top of a log."""
    rows = {}
    for m in re.finditer(r"^\| (\S+) +\| (.*?) +\| (\S*) +\|$", text, re.M):
        if m.group(1) != "option":
            rows[m.group(1)] = (m.group(2).strip(), m.group(3))
    return rows


def headline(run):
    """The figure a record is judged on: sliding window when the run has it, else the roundtrip."""
    return run["sliding"] or run["roundtrip"]


# ---------------------------------------------------------------------------------------------
# report


def fmt(x, w=10, p=4):
    return f"{x:{w}.{p}f}" if x is not None else f"{'-':>{w}}"


def report(runs, base_nats=None, out=sys.stdout):
    pr = lambda s="": print(s, file=out)
    pr(f"{'seed':>6} {'steps':>6} {'post_ema':>10} {'roundtrip':>10} {'sliding':>10} {'val_loss':>12} {'bytes':>10}  log")
    for r in runs:
        h = headline(r)
        pr(f"{r['seed'] if r['seed'] is not None else '-':>6} {r['steps'] if r['steps'] is not None else '-':>6} "
           f"{fmt(r['post_ema'][1] if r['post_ema'] else None)} {fmt(r['roundtrip'][1])} "
           f"{fmt(r['sliding'][1] if r['sliding'] else None)} {h[0]:12.8f} {r['total_bytes'] or '-':>10}  {r['path']}")
    pr("(post_ema, roundtrip, sliding: val_bpb; val_loss: nats per token of the headline figure, "
       + ("sliding window)" if all(r["sliding"] for r in runs) else "the roundtrip where a run has no sliding window)"))
    losses = [headline(r)[0] for r in runs]
    bpbs = [headline(r)[1] for r in runs]
    ml, sl = mean_std(losses)
    mb, sb = mean_std(bpbs)
    pr(f"n={len(runs)}  val_bpb mean {mb:.6f} std {sb:.6f}  val_loss mean {ml:.6f} std {sl:.6f}")
    if base_nats is None:
        return None
    bm, bs = mean_std(base_nats)
    pr(f"baseline n={len(base_nats)}  val_loss mean {bm:.6f} std {bs:.6f}" + ("  (one value: taken as exact)" if len(base_nats) == 1 else ""))
    res = welch_improvement_test(losses, base_nats)
    pr(f"improvement {res['improvement']:+.6f} nats (needed > {res['margin']} nats)  t={res['t']:.4f} df={res['df']:.2f}  "
       f"p={res['p']:.3g}  one-sided Welch, H0: improvement <= {res['margin']}")
    pr(f"verdict: {'PASS' if res['significant'] else 'FAIL'} (p {'<' if res['significant'] else '>='} {ALPHA})")
    return res


def floats(text, what):
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"error: {what}: expected comma-separated numbers, got '{text}'")


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    train_args = []
    if "--" in args:
        i = args.index("--")
        args, train_args = args[:i], args[i + 1:]
    opts, logs = {}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--seeds", "--prefix", "--baseline-nats", "--baseline-bpb"):
            if i + 1 >= len(args):
                sys.exit(f"error: {a} needs a value")
            opts[a] = args[i + 1]
            i += 2
        elif a == "--baseline-logs":
            opts[a] = []
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                opts[a].append(args[i])
                i += 1
        elif a == "--dry-run":
            opts[a] = True
            i += 1
        elif a.startswith("--"):
            sys.exit(f"error: unknown option {a} (see --help)")
        else:
            logs.append(a)
            i += 1
    if cmd == "run":
        seeds = [int(s) for s in floats(opts.get("--seeds", "1337,42,2025"), "--seeds")]
        prefix = opts.get("--prefix", "seeds")
        cmd_line = train_args or ["./train_gpt"]
        for s, env_extra in zip(seeds, gpu_groups(len(seeds))):
            rid = f"{prefix}_seed{s}"
            env = dict(os.environ, SEED=str(s), RUN_ID=rid, OUT_DIR=os.path.join("runs", rid), **env_extra)
            os.makedirs(env["OUT_DIR"], exist_ok=True)
            print(f"== seed {s}: SEED={s} RUN_ID={rid} OUT_DIR={env['OUT_DIR']} {' '.join(cmd_line)}", flush=True)
            if opts.get("--dry-run"):
                continue
            rc = subprocess.call(cmd_line, env=env)
            if rc != 0:
                sys.exit(f"error: seed {s}: {' '.join(cmd_line)} exited with status {rc} (log: logs/{rid}.txt)")
            logs.append(os.path.join("logs", rid + ".txt"))
        if opts.get("--dry-run"):
            return 0
    elif cmd != "report":
        sys.exit(f"error: unknown command '{cmd}' (run or report; see --help)")
    if not logs:
        sys.exit("error: no logs to report on")
    try:
        runs = [parse_log(p) for p in logs]
        base = None
        if "--baseline-logs" in opts:
            base = [headline(parse_log(p))[0] for p in opts["--baseline-logs"]]
        elif "--baseline-nats" in opts:
            base = floats(opts["--baseline-nats"], "--baseline-nats")
        elif "--baseline-bpb" in opts:
            ratio = sum(headline(r)[1] / headline(r)[0] for r in runs) / len(runs)  # bpb per nat on this val set
            base = [b / ratio for b in floats(opts["--baseline-bpb"], "--baseline-bpb")]
        if base is not None and not base:
            sys.exit("error: the baseline is empty")
        report(runs, base)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    return 0


def gpu_groups(n_runs):
    """Extra environment per run. Today: nothing (one run at a time, on whatever GPUs the
    environment gives). The hook for later: split the visible GPUs into groups and set
    CUDA_VISIBLE_DEVICES per run, then launch the runs of different groups concurrently."""
    return [{} for _ in range(n_runs)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
