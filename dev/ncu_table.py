#!/usr/bin/env python3
"""ncu_table.py: one training micro-step, kernel by kernel, from Nsight Compute's CSV.

On a GPU machine (about a minute on an H200; ncu replays each of the ~480 kernels):

    make build/dev_model
    ncu --profile-from-start off --clock-control none --csv \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,\\
sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active \\
        build/dev_model --profile-once > ncu.csv
    python3 dev/ncu_table.py ncu.csv

`dev_model --profile-once` runs the seed model's micro-step (48 x 2048 tokens, forward and
backward) twice to warm up, then once between cudaProfilerStart / Stop, so ncu sees exactly one.
Printed: per kernel name and grid, the calls, total ms, us per call, DRAM GB and TB/s, the SM
throughput and tensor-pipe shares (time-weighted); then per family (attention forward and
backward, GEMMs, memory-bound: the PROFILE=1 families, by kernel name). ncu runs the kernels one
at a time with the clocks free (no other kernel draws power meanwhile), so its times are the
kernels' own, not what they take in a training step (dev/bench.sh, PROFILE=1); the rates it
gives are the roofline side of docs/RESULTS.md. Metrics missing from the CSV count as 0.
"""
import collections
import csv
import re
import sys

# the units ncu writes (it scales some to fit: "Kbyte", "usecond", ...) -> bytes, seconds, percent
UNIT = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9,
        "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3,
        "second": 1.0, "%": 1}
TIME, RD, WR = "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
TC = ("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
      "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active")
FAMILIES = ["attention fwd", "attention bwd", "GEMMs", "memory-bound"]


def family(name):
    """The PROFILE family of a kernel, by its name (the launchers' ProfScope, as close as names go)."""
    if "attention_forward" in name:
        return "attention fwd"
    if "attention_backward" in name:
        return "attention bwd"
    if re.search(r"nvjet|xmma|gemm|cutlass|splitKreduce", name, re.I):
        return "GEMMs"
    return "memory-bound"


def short(name):
    """The kernel's name without its argument list and template arguments."""
    name = re.sub(r"\(.*", "", name).strip()
    return re.sub(r"<.*", "", name)[:60]


def read_kernels(path):
    """{kernel id: {"name", "grid", metric: value in base units}} from an ncu --csv file."""
    with open(path, errors="replace") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if r and r[0] == "ID"), None)
    if start is None:
        sys.exit(f"ncu_table: {path}: no ncu CSV header (a line starting with \"ID\")")
    col = {k: j for j, k in enumerate(rows[start])}
    for need in ("ID", "Kernel Name", "Grid Size", "Metric Name", "Metric Unit", "Metric Value"):
        if need not in col:
            sys.exit(f"ncu_table: {path}: the CSV has no '{need}' column")
    kernels = collections.OrderedDict()
    for r in rows[start + 1:]:
        if len(r) < len(col):
            continue
        k = kernels.setdefault(r[col["ID"]], {"name": r[col["Kernel Name"]], "grid": r[col["Grid Size"]]})
        try:
            v = float(r[col["Metric Value"]].replace(",", ""))
        except ValueError:
            continue
        unit = r[col["Metric Unit"]]
        if unit not in UNIT:
            sys.exit(f"ncu_table: {path}: unit '{unit}' of {r[col['Metric Name']]} unknown")
        k[r[col["Metric Name"]]] = v * UNIT[unit]
    return kernels


def tables(kernels):
    """(lines of the per-kernel table, {family: [calls, seconds, bytes]})."""
    agg = collections.OrderedDict()
    fam = {f: [0, 0.0, 0.0] for f in FAMILIES}
    for k in kernels.values():
        t, b = k.get(TIME, 0.0), k.get(RD, 0.0) + k.get(WR, 0.0)
        tc = next((k[m] for m in TC if m in k), 0.0)
        a = agg.setdefault((short(k["name"]), k["grid"]), [0, 0.0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] += t
        a[2] += b
        a[3] += k.get(SM, 0.0) * t
        a[4] += tc * t
        f = fam[family(k["name"])]
        f[0] += 1
        f[1] += t
        f[2] += b
    total = sum(f[1] for f in fam.values())
    lines = [f"{len(kernels)} kernels, {total * 1e3:.3f} ms of kernel time (one at a time, under ncu)",
             f"{'kernel':60s} {'grid':>14s} {'n':>4s} {'ms':>8s} {'us/call':>8s} {'GB':>7s} {'TB/s':>6s} {'sm%':>5s} {'tc%':>5s}"]
    for (name, grid), a in sorted(agg.items(), key=lambda x: -x[1][1]):
        t = max(a[1], 1e-12)
        lines.append(f"{name:60s} {grid:>14s} {a[0]:4d} {a[1] * 1e3:8.3f} {a[1] / a[0] * 1e6:8.1f} {a[2] / 1e9:7.2f} "
                     f"{a[2] / t / 1e12:6.2f} {a[3] / t:5.1f} {a[4] / t:5.1f}")
    return lines, fam


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    lines, fam = tables(read_kernels(argv[1]))
    print("\n".join(lines))
    print(f"\n{'family':14s} {'kernels':>7s} {'ms':>8s} {'GB':>8s} {'TB/s':>6s}")
    for f in FAMILIES:
        n, t, b = fam[f]
        print(f"{f:14s} {n:7d} {t * 1e3:8.3f} {b / 1e9:8.2f} {b / max(t, 1e-12) / 1e12:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
