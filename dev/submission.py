#!/usr/bin/env python3
"""submission.py: a records/track_10min_16mb/<date>_<NAME>/ folder from the logs of a seeds run
(dev/seeds.py), the way the challenge takes submissions: README.md, submission.json, the train
logs, the sources that build train_gpt, and a train_gpt.py that builds with make and runs
./train_gpt with the logged settings. Run from the repository root (make submission does):

    dev/submission.py --name NAME --author "Full Name" --github ID [--out DIR] [--blurb TEXT] LOG...

The byte count is the challenge's: the largest artifact of the runs (Serialized model
int6+zstd) + every code file of the folder (sources, Makefile, train_gpt.py). A folder over
16,000,000 bytes is refused (nothing written); so is one whose runs differ in config (other than
SEED, RUN_ID, OUT_DIR) or whose folder exists already.
"""
import datetime, io, json, os, re, shutil, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeds  # noqa: E402

LIMIT = 16_000_000
PER_RUN = {"SEED", "RUN_ID", "OUT_DIR"}
MACHINE = {"DATA_PATH", "TOKENIZER_PATH", "SOURCE_DIR", "INIT_CKPT", "RESUME"}  # where things are, not what runs

TRAIN_GPT_PY = '''#!/usr/bin/env python3
"""Builds train_gpt (CUDA C++, see README.md) with make, then runs it with the settings of this
record's logs. Settings already in the environment win (e.g. SEED=42 python3 train_gpt.py);
extra arguments go to ./train_gpt (./train_gpt --help lists every option)."""
import os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = %(args)r
SETTINGS = %(settings)s


def main():
    subprocess.run(["make", "train_gpt"], cwd=HERE, check=True)
    env = dict(os.environ)
    for k, v in SETTINGS.items():
        env.setdefault(k, v)
    cmd = [os.path.join(HERE, "train_gpt")] + ARGS + sys.argv[1:]
    sys.exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
'''


def fail(msg):
    sys.exit(f"error: {msg}")


def settings_of(run):
    """The non-default settings of a run, as (preset, {ENV: value}), minus per-run and machine ones."""
    preset, out = "seed", {}
    for k, (v, src) in run["config"].items():
        if k == "preset":
            preset = v
            continue
        if not re.fullmatch(r"[A-Z0-9_]+", k) or src in ("default", "preset", "") or k in PER_RUN | MACHINE:
            continue
        if v.startswith("..."):
            fail(f"{run['path']}: the value of {k} is cut short in the log's table; it cannot be reproduced")
        out[k] = v
    return preset, out


def main(argv):
    opts, logs, i = {}, [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a in ("--name", "--author", "--github", "--out", "--blurb"):
            if i + 1 >= len(argv):
                fail(f"{a} needs a value")
            opts[a] = argv[i + 1]
            i += 2
        elif a.startswith("--"):
            fail(f"unknown option {a} (see --help)")
        else:
            logs.append(a)
            i += 1
    for k in ("--name", "--author", "--github"):
        if not opts.get(k):
            fail(f"{k} is required (make submission NAME=... AUTHOR=... GITHUB=...)")
    name = opts["--name"]
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        fail(f"NAME={name!r}: use letters, digits and . _ + - only (it becomes a folder name)")
    if not logs:
        fail("no logs given (LOGS=... or the logs/seeds_seed*.txt of dev/seeds.py run)")
    try:
        runs = [seeds.parse_log(p) for p in logs]
    except (OSError, ValueError) as e:
        fail(str(e))
    seen = [r["seed"] for r in runs]
    dup = next((s for s in seen if seen.count(s) > 1), None)
    if dup is not None:
        fail(f"two logs of seed {dup}: a record's runs are different seeds")
    preset, settings = settings_of(runs[0])
    for r in runs[1:]:
        if settings_of(r) != (preset, settings):
            fail(f"{r['path']} and {runs[0]['path']} ran different configs: one record is one config")
    missing = [r["path"] for r in runs if not r["artifact_bytes"] or not r["code_files"]]
    if missing:
        fail(f"{missing[0]}: no artifact size or code file list in the log")
    today = datetime.date.today().isoformat()
    out = opts.get("--out") or os.path.join("records", "track_10min_16mb", f"{today}_{name}")
    if os.path.exists(out):
        fail(f"{out} exists already (remove it or give OUT=)")

    # the files: the sources train_gpt counted as its code, the Makefile (without `make data`,
    # whose scripts stay in the repository), train_gpt.py; then the logs
    code = {}
    for f in runs[0]["code_files"]:
        if not os.path.isfile(f):
            fail(f"{f}: listed as code in {runs[0]['path']} but not found (run from the repository root)")
        code[f] = open(f, "rb").read()
    mk = open("Makefile", encoding="utf-8").read()
    mk = re.sub(r"\n# `make data`[^\n]*\ninclude dev/data/data.mk\n", "\n", mk)
    mk = re.sub(r"(?m)^include dev/data/data\.mk\n", "", mk)
    code["Makefile"] = mk.encode()
    args = [] if preset == "seed" else ["--preset", preset]
    body = "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in settings.items()) + "}"
    code["train_gpt.py"] = (TRAIN_GPT_PY % {"args": args, "settings": body}).encode()
    code_bytes = sum(len(b) for b in code.values())
    artifact = max(r["artifact_bytes"] for r in runs)
    total = artifact + code_bytes
    print(f"artifact {artifact:,} bytes (largest of {len(runs)} runs) + code {code_bytes:,} bytes ({len(code)} files) "
          f"= {total:,} bytes; limit {LIMIT:,}: " + ("fits" if total <= LIMIT else "OVER"))
    if total > LIMIT:
        fail(f"{total:,} bytes is over the {LIMIT:,}-byte limit: no folder written")

    heads = [seeds.headline(r) for r in runs]
    loss_m, loss_s = seeds.mean_std([h[0] for h in heads])
    bpb_m, bpb_s = seeds.mean_std([h[1] for h in heads])
    metric = "final_int6_sliding_window_exact" if all(r["sliding"] for r in runs) else "final_int6_roundtrip_exact"
    mean = lambda key, j: round(sum(r[key][j] for r in runs) / len(runs), 8) if all(r[key] for r in runs) else None
    sub = {
        "author": opts["--author"], "github_id": opts["--github"], "name": name,
        "blurb": opts.get("--blurb") or f"parameter-golf.c (CUDA C++), {len(runs)} seeds; val_bpb is the mean {metric}.",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "val_loss": round(loss_m, 8), "val_bpb": round(bpb_m, 8),
        "val_loss_std": round(loss_s, 8), "val_bpb_std": round(bpb_s, 8),
        "seeds": [r["seed"] for r in runs], "val_bpb_per_seed": [h[1] for h in heads],
        "pre_quant_val_loss": mean("post_ema", 0), "pre_quant_val_bpb": mean("post_ema", 1),
        "int6_zstd_val_loss": mean("roundtrip", 0), "int6_zstd_val_bpb": mean("roundtrip", 1),
        "bytes_total": total, "bytes_model_int6_zstd": artifact, "bytes_code": code_bytes,
    }

    log_names = [f"train_seed{r['seed']}.log" for r in runs]
    buf = io.StringIO()
    seeds.report([dict(r, path=ln) for r, ln in zip(runs, log_names)], None, out=buf)  # named as in the folder
    table = buf.getvalue()
    cfg_rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in settings.items()) or "| (none) | |"
    steps = ", ".join(str(r["steps"]) for r in runs)
    readme = f"""# {name}

{sub['blurb']}

By {opts['--author']} (@{opts['--github']}), {today}. Trained and scored with
parameter-golf.c - the model "11L + XSA4 + EMA + Late QAT + GPTQ-lite" in
CUDA C++ (cuBLASLt, zstd), no PyTorch.

## Results ({len(runs)} seeds)

val_bpb **{bpb_m:.8f}** (std {bpb_s:.8f}), val_loss {loss_m:.8f} nats (std {loss_s:.8f}): the mean
of `{metric}` over the seeds. Steps per run: {steps}.

```
{table.rstrip()}
```

## Size

| | bytes |
| --- | ---: |
| artifact (int6 + zstd-22, largest of the runs) | {artifact:,} |
| code ({len(code)} files: {', '.join(code)}) | {code_bytes:,} |
| **total** | **{total:,}** (limit {LIMIT:,}) |

## Configuration

Preset `{preset}`, with these settings (everything else is `./train_gpt`'s default; `./train_gpt
--help` lists them all):

| setting | value |
| --- | --- |
{cfg_rows}

## How to reproduce

Needs the CUDA toolkit (nvcc, cuBLASLt) and libzstd-dev; data in `./data` (the challenge's
`fineweb10B_sp1024` shards and `fineweb_1024_bpe.model`) or `DATA_PATH` / `TOKENIZER_PATH`.

```sh
python3 train_gpt.py                 # make train_gpt, then ./train_gpt with the settings above
SEED=42 python3 train_gpt.py         # another seed (the environment wins over the logged settings)
```

Logs: {', '.join(log_names)}.
"""
    tmp = tempfile.mkdtemp(prefix=".submission.", dir=os.path.dirname(os.path.abspath(out)) if os.path.dirname(out) else ".")
    try:
        for f, b in code.items():
            os.makedirs(os.path.join(tmp, os.path.dirname(f)), exist_ok=True)
            with open(os.path.join(tmp, f), "wb") as fh:
                fh.write(b)
        os.chmod(tmp, 0o755)
        os.chmod(os.path.join(tmp, "train_gpt.py"), 0o755)
        for r, ln in zip(runs, log_names):
            shutil.copyfile(r["path"], os.path.join(tmp, ln))
        with open(os.path.join(tmp, "submission.json"), "w") as fh:
            json.dump(sub, fh, indent=2)
            fh.write("\n")
        with open(os.path.join(tmp, "README.md"), "w") as fh:
            fh.write(readme)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}/: README.md submission.json {' '.join(log_names)} + {len(code)} code files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
