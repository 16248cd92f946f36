"""bench_table.py: the final table of dev/bench.sh, from the logs it wrote (no GPU needed).

  python3 dev/bench_table.py LOG_DIR

Reads LOG_DIR/ours_plain.log and ours_profile.log (./train_gpt, plain and PROFILE=1),
yardstick.log (dev/yardstick.py), ours_eval.log (./eval), record.log (the record script, when
bench.sh ran it), and prints one table: ms/step,
tokens/s, model TFLOP/s and % of the 790 TFLOP/s ceiling, peak memory, the per-family breakdown
side by side (ms per step and per micro-step, attention TFLOP/s from the model's attention
FLOPs), the sliding eval's scored tokens/s, the ratios ours/yardstick, and issue [F]'s targets
with PASS/MISS. A missing or unparsable log leaves its cells "-" and its targets "n/a" (and
the exit status 1), never a made-up number. Parsing is by the grep-able lines:
  perf: steps:S step_avg:Xms tok/s:Y model_TFLOP/s:Z ceiling:P% ... peak_memory:MGiB
  profile: <family> ms/step:X ms/micro:Y share:Z% calls/step:N        (ours, PROFILE=1)
  yardstick_perf: ... / yardstick_profile: ... / yardstick_sliding: ...  (dev/yardstick.py)
  sliding_window stride:64 val_loss:... eval_time:Tms                  (./eval)
  step:N/N ... step_avg:Xms                                             (record.log, optional)
  val_tokens:N eval_seq_len:T stride:S                                  (./eval)
"""
import os
import re
import sys

FAMILIES = ["attention fwd", "attention bwd", "GEMMs (cuBLASLt)", "memory-bound layers", "loss (head CE)",
            "optimizer+weights", "communication", "gaps", "total GPU time"]
# issue [F]'s targets
TARGET_SPEEDUP = 1.4        # training tokens/s, ours / yardstick
TARGET_PEAK_GIB = 16.0      # ours, device memory in use (cudaMemGetInfo), GiB
TARGET_SLIDING = 2.0        # sliding-eval scored tokens/s, ours / yardstick
TARGET_ATTN_FWD = 450.0     # TFLOP/s at the seed shape
TARGET_ATTN_BWD = 350.0
TARGET_MEMBOUND_MICRO = 14.0  # ms of memory-bound layers per micro-step

NUM = r"(-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"  # a number; "-" (not measured) is no number


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def field(text, prefix, key):
    """The number after `key:` on the last line starting with `prefix`, or None."""
    val = None
    for line in text.splitlines():
        if line.startswith(prefix):
            m = re.search(r"(?:^|\s)" + re.escape(key) + r":" + NUM, line)
            if m:
                val = float(m.group(1))
    return val


def profile_rows(text, prefix):
    """{family: (ms/step, ms/micro)} from `prefix: <family> ms/step:X ms/micro:Y ...` lines."""
    rows = {}
    pat = re.compile(r"^" + re.escape(prefix) + r": (.+?)\s+ms/step:\s*" + NUM + r"\s+ms/micro:\s*" + NUM)
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            rows[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)))
    return rows


def flops_fields(text, prefix):
    return field(text, prefix, "flops_per_token")


def parse(log_dir):
    ours = read(os.path.join(log_dir, "ours_plain.log"))
    prof = read(os.path.join(log_dir, "ours_profile.log"))
    yard = read(os.path.join(log_dir, "yardstick.log"))
    ev = read(os.path.join(log_dir, "ours_eval.log"))
    meta = read(os.path.join(log_dir, "bench.env"))
    rec = read(os.path.join(log_dir, "record.log"))
    r = {"ours": {}, "yard": {}}
    for side, text, pfx in (("ours", ours, "perf:"), ("yard", yard, "yardstick_perf:")):
        for k in ("step_avg", "tok/s", "model_TFLOP/s", "ceiling", "flops_per_token"):
            r[side][k] = field(text, pfx, k)
    r["ours"]["peak"] = field(ours, "perf:", "peak_memory")
    r["yard"]["peak"] = field(yard, "yardstick_perf:", "device_in_use")
    r["yard"]["peak_reserved"] = field(yard, "yardstick_perf:", "peak_reserved")
    r["yard"]["peak_allocated"] = field(yard, "yardstick_perf:", "peak_allocated")
    r["ours"]["profile"] = profile_rows(prof, "profile")
    r["yard"]["profile"] = profile_rows(yard, "yardstick_profile")
    r["ours"]["wall_profiled"] = field(prof, "profile_wall:", "profiled ms/step")
    r["yard"]["scored"] = field(yard, "yardstick_sliding:", "tokens_scored")
    r["yard"]["sliding_s"] = field(yard, "yardstick_sliding:", "time")
    r["yard"]["sliding_tok_s"] = field(yard, "yardstick_sliding:", "scored_tok/s")
    ms = field(ev, "sliding_window ", "eval_time")
    r["ours"]["sliding_s"] = ms / 1000.0 if ms is not None else None
    r["ours"]["val_tokens"] = field(ev, "val_tokens:", "val_tokens")
    # both sides score the same windows of the same tokens: the yardstick counts them
    sc = r["yard"]["scored"]
    r["ours"]["sliding_tok_s"] = sc / r["ours"]["sliding_s"] if sc and r["ours"]["sliding_s"] else None
    r["shape"] = {k: field(meta, "shape:", k) for k in ("L", "D", "T", "tokens_per_step", "grad_accum")}
    r["yard"]["warnings"] = [l for l in yard.splitlines() if "WARNING" in l]
    r["record_step_avg"] = field(rec, "step:", "step_avg")  # the record script's own step lines (optional run)
    r["meta"] = [l for l in meta.splitlines() if l.startswith(("date:", "gpu:"))]
    return r


def fmt(v, spec="{:.2f}"):
    return "-" if v is None else spec.format(v)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def attn_tflops(shape, ms_per_step, backward):
    """Attention kernel FLOPs of one step over the family's time: forward 2 * D * (T + 1) per
    token and layer (QK^T and PV, causal half; common/model.h), backward 2.5x that, the
    convention of dev/attention.cu and FlashAttention's papers (the backward's five GEMMs
    recompute QK^T). The model FLOPs of the perf line count the backward as 2x (no recompute)."""
    if ms_per_step in (None, 0) or any(shape.get(k) is None for k in ("L", "D", "T", "tokens_per_step")):
        return None
    fwd = shape["tokens_per_step"] * shape["L"] * 2 * shape["D"] * (shape["T"] + 1)
    return (2.5 * fwd if backward else fwd) / (ms_per_step / 1000.0) / 1e12


def table(r):
    o, y = r["ours"], r["yard"]
    lines = list(r.get("meta", []))
    w = "{:<36s} {:>14s} {:>14s} {:>10s}"
    lines.append(w.format("bench (one H200, same call)", "ours", "yardstick", "ours/yard"))
    lines.append("-" * 77)

    def row(name, a, b, spec="{:.2f}", rat=None):
        lines.append(w.format(name, fmt(a, spec), fmt(b, spec), fmt(rat, "{:.2f}x")))

    row("train ms/step", o["step_avg"], y["step_avg"], rat=ratio(y["step_avg"], o["step_avg"]))
    row("train tokens/s", o["tok/s"], y["tok/s"], "{:.0f}", ratio(o["tok/s"], y["tok/s"]))
    row("model TFLOP/s", o["model_TFLOP/s"], y["model_TFLOP/s"], "{:.1f}", ratio(o["model_TFLOP/s"], y["model_TFLOP/s"]))
    if r.get("record_step_avg") is not None:
        row("record script ms/step (optional)", None, r["record_step_avg"], rat=ratio(r["record_step_avg"], o["step_avg"]))
    row("% of 790 TFLOP/s", o["ceiling"], y["ceiling"], "{:.1f}")
    row("peak memory GiB (device in use)", o["peak"], y["peak"], "{:.2f}", ratio(o["peak"], y["peak"]))
    row("  torch peak reserved GiB", None, y.get("peak_reserved"), "{:.2f}")
    row("  torch peak allocated GiB", None, y.get("peak_allocated"), "{:.2f}")
    row("flops/token (model.h formula)", o["flops_per_token"], y["flops_per_token"], "{:.0f}")
    row("sliding eval s", o["sliding_s"], y["sliding_s"], "{:.2f}")
    row("sliding scored tokens/s", o["sliding_tok_s"], y["sliding_tok_s"], "{:.0f}", ratio(o["sliding_tok_s"], y["sliding_tok_s"]))
    lines.append("")
    wf = "{:<24s} {:>10s} {:>10s} {:>10s} {:>10s} {:>9s}"
    lines.append(wf.format("family (ms)", "ours/step", "ours/micro", "yard/step", "yard/micro", "yard-ours"))
    lines.append("-" * 77)
    for f in FAMILIES:
        a, b = o["profile"].get(f), y["profile"].get(f)
        d = b[0] - a[0] if a and b else None
        lines.append(wf.format(f, fmt(a and a[0]), fmt(a and a[1], "{:.3f}"), fmt(b and b[0]), fmt(b and b[1], "{:.3f}"),
                               fmt(d, "{:+.1f}")))
    if o["wall_profiled"] is not None:
        lines.append(f"(ours profiled wall ms/step: {o['wall_profiled']:.2f}; unprofiled above)")
    sh = r["shape"]
    af_o = attn_tflops(sh, (o["profile"].get("attention fwd") or (None,))[0], False)
    ab_o = attn_tflops(sh, (o["profile"].get("attention bwd") or (None,))[0], True)
    af_y = attn_tflops(sh, (y["profile"].get("attention fwd") or (None,))[0], False)
    ab_y = attn_tflops(sh, (y["profile"].get("attention bwd") or (None,))[0], True)
    row_w = "{:<24s} {:>10s} {:>21s}"
    lines.append(row_w.format("attention fwd TFLOP/s", fmt(af_o, "{:.0f}"), fmt(af_y, "{:.0f}")))
    lines.append(row_w.format("attention bwd TFLOP/s", fmt(ab_o, "{:.0f}"), fmt(ab_y, "{:.0f}")))
    lines.append("")
    mb = (o["profile"].get("memory-bound layers") or (None, None))[1]
    targets = [
        ("training tokens/s >= 1.4x yardstick", ratio(o["tok/s"], y["tok/s"]), lambda v: v >= TARGET_SPEEDUP, "{:.2f}x"),
        ("peak memory <= 16 GiB", o["peak"], lambda v: v <= TARGET_PEAK_GIB, "{:.2f} GiB"),
        ("sliding eval >= 2x yardstick", ratio(o["sliding_tok_s"], y["sliding_tok_s"]), lambda v: v >= TARGET_SLIDING, "{:.2f}x"),
        ("attention fwd >= 450 TFLOP/s", af_o, lambda v: v >= TARGET_ATTN_FWD, "{:.0f}"),
        ("attention bwd >= 350 TFLOP/s", ab_o, lambda v: v >= TARGET_ATTN_BWD, "{:.0f}"),
        ("memory-bound <= 14 ms/micro-step", mb, lambda v: v <= TARGET_MEMBOUND_MICRO, "{:.2f} ms"),
    ]
    complete = True
    for name, v, ok, spec in targets:
        if v is None:
            complete = False
            verdict = "n/a"
        else:
            verdict = "PASS" if ok(v) else "MISS"
        lines.append(f"target: {name:<36s} {fmt(v, spec):>12s}  {verdict}")
    for wline in y.get("warnings", []):
        lines.append("check: " + wline)
    if r.get("record_step_avg") is not None and y["step_avg"] is not None:
        ok = y["step_avg"] <= r["record_step_avg"]
        lines.append(f"check: yardstick at least as fast as the record script: {y['step_avg']:.2f} vs "
                     f"{r['record_step_avg']:.2f} ms/step  {'PASS' if ok else 'MISS (the yardstick is too slow)'}")
    return lines, complete


def main(argv):
    if len(argv) != 1:
        print("usage: bench_table.py LOG_DIR", file=sys.stderr)
        return 2
    if not os.path.isdir(argv[0]):
        print(f"error: {argv[0]}: no such directory", file=sys.stderr)
        return 1
    lines, complete = table(parse(argv[0]))
    print("\n".join(lines))
    if not complete:
        print("bench: some results are missing (n/a above): see the logs in " + argv[0])
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
