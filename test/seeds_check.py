"""dev/seeds.py's statistics against values computed independently: closed forms of Student's t
(1, 2 and 4 degrees of freedom, the normal limit), values and Welch tests computed with scipy
(hard-coded below, so they check even where scipy is missing), and, when scipy is installed,
random cases against it live. Then the log parser on a real log when one is given.

    seeds_check.py stats
    seeds_check.py log LOGFILE      (a finished train_gpt log with all three final figures)
"""
import math, os, random, re, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "dev"))
import seeds  # noqa: E402

# scipy 1.10.1: stats.t.sf(t, df)
SF = [(0.5, 3, 0.3257239824240755), (2.5, 2.7, 0.048539707221467325), (-1.3, 5.5, 0.8772916520457021),
      (3.7, 8, 0.0030213037524912017), (10, 3.2, 0.0008043649330659256)]
# scipy 1.10.1: stats.ttest_ind(new + 0.005, base, equal_var=False, alternative='less') -> (-t, p)
WELCH = [([1.1201, 1.1189, 1.1214], [1.1301, 1.1288, 1.1312], 4.894564612858838, 0.00405416463477228),
         ([2.001, 2.004, 1.998, 2.003], [2.02, 2.015], 3.8890872965261405, 0.0426392699809675),
         ([1.1233, 1.1241, 1.1229], [1.1285, 1.1279, 1.1291], 0.13483997249307167, 0.44962665867433044)]


def close(a, b, rel=1e-9, what=""):
    assert abs(a - b) <= rel * abs(b) + 1e-15, f"{what}: {a!r} != {b!r}"  # (+ the closed forms cancel in the far tail)


def stats():
    n = 0
    for t in [-30, -3.1, -1, -0.2, 0, 0.3, 1, 2.5, 7, 60]:
        close(seeds.t_sf(t, 1), 0.5 - math.atan(t) / math.pi, 1e-10, f"df=1 t={t}")  # Cauchy
        close(seeds.t_sf(t, 2), 0.5 - t / (2 * math.sqrt(t * t + 2)), 1e-10, f"df=2 t={t}")
        x = t / math.sqrt(1 + t * t / 4)
        close(seeds.t_sf(t, 4), 0.5 - 0.375 * x * (1 - t * t / (12 * (1 + t * t / 4))), 1e-10, f"df=4 t={t}")
        assert abs(seeds.t_sf(t, 1e7) - 0.5 * math.erfc(t / math.sqrt(2))) < 1e-7, f"df=1e7 t={t}"  # the normal limit (finite df: ~1e-8 off)
        n += 4
    for t, df, want in SF:
        close(seeds.t_sf(t, df), want, 1e-10, f"sf({t}, {df})")
        n += 1
    for new, base, t, p in WELCH:
        r = seeds.welch_improvement_test(new, base)
        close(r["t"], t, 1e-10, f"welch t {new} {base}")
        close(r["p"], p, 1e-8, f"welch p {new} {base}")
        assert r["significant"] == (p < 0.01)
        n += 2
    # one baseline value: exact, so a one-sample test with n-1 degrees of freedom
    r = seeds.welch_improvement_test([1.0, 1.002, 0.998], [1.01])
    close(r["df"], 2.0, 1e-12, "one-value baseline df")
    close(r["t"], (0.01 - 0.005) / (0.002 / math.sqrt(3)), 1e-9, "one-value baseline t")
    n += 2
    live = 0
    try:
        from scipy import stats as st
        import numpy as np
        rng = random.Random(7)
        for _ in range(300):
            t, df = rng.uniform(-12, 12), rng.choice([rng.uniform(0.3, 4), rng.uniform(4, 400)])
            close(seeds.t_sf(t, df), float(st.t.sf(t, df)), 1e-8, f"scipy sf({t}, {df})")
            k, m = rng.randint(2, 6), rng.randint(2, 6)
            new = [rng.gauss(1.12, 0.002) for _ in range(k)]
            base = [rng.gauss(1.13, rng.uniform(0.0005, 0.004)) for _ in range(m)]
            r = seeds.welch_improvement_test(new, base)
            s = st.ttest_ind(np.array(new) + 0.005, base, equal_var=False, alternative="less")
            close(r["t"], -float(s.statistic), 1e-9, "scipy welch t")
            close(r["p"], float(s.pvalue), 1e-7, "scipy welch p")
            live += 3
    except ImportError:
        print("scipy not installed: live comparison skipped (the hard-coded scipy values were checked)")
    print(f"{n} closed-form/hard-coded and {live} live scipy checks passed")


def log(path):
    r = seeds.parse_log(path)
    text = open(path).read()
    for key, tag in seeds.FIGURES:
        m = re.search(rf"^{tag} val_loss:(\S+) val_bpb:(\S+)$", text, re.M)
        assert m, f"{path}: no {tag} line"
        assert r[key] == (float(m.group(1)), float(m.group(2))), (key, r[key], m.groups())
    assert r["seed"] is not None and r["steps"] is not None and r["artifact_bytes"] and r["code_bytes"], r
    assert r["total_bytes"] == r["artifact_bytes"] + r["code_bytes"], r
    assert "train_gpt.cu" in r["code_files"] and r["config"]["SEED"][0] == str(r["seed"]), r
    print(f"{path}: seed {r['seed']} steps {r['steps']} sliding {r['sliding']} bytes {r['total_bytes']}")


if __name__ == "__main__":
    {"stats": lambda: stats(), "log": lambda: log(sys.argv[2])}[sys.argv[1]]()
