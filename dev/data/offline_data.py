#!/usr/bin/python3
"""offline_data.py: a small real dataset for machines that cannot reach Hugging Face.

    /usr/bin/python3 dev/data/offline_data.py          (what `make data` runs when offline)

It is NOT FineWeb. The text is the King James Bible (1611; public domain), which Debian and
Ubuntu ship in the package bible-kjv-text and print with the `bible` program of bible-kjv; we
install both with apt-get when they are missing and we are root (2.5 MB download). Each of the
1,189 chapters is one document ("Genesis 1", then one verse per line, verse numbers dropped);
the chapters are shuffled with a fixed seed (1337, as the challenge shuffles FineWeb) and the
first ones, up to 300,000 tokens, are the validation split; the rest (~1.05M tokens) is train.
A 1024-piece SentencePiece BPE tokenizer is trained on the same text with the challenge's
settings (tokenize_text.py).

Everything goes where train_gpt looks by default, so `./train_gpt` just works afterwards:
    data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin, fineweb_train_000000.bin
    data/datasets/fineweb10B_sp1024/NOT_FINEWEB.txt   (says what this is; also the sign for
                                                       fineweb.py that it may replace it)
    data/tokenizers/fineweb_1024_bpe.model (+ .vocab)
The names are FineWeb's, the content is not: losses and bits per byte on it are not comparable
with the parameter-golf leaderboard. Running it again is a no-op once the build is complete; it
refuses to overwrite shards or a tokenizer that it did not write itself (real FineWeb).

Takes about 6 s on 2 cores (plus about 3 s for the apt-get install, once).
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
import tokenize_text  # noqa: E402

MARKER = "NOT_FINEWEB.txt"
SEED = 1337
BIBLE_RANGE = "Gen1:1-Rev22:21"  # the whole text
SOURCE = "King James Bible (1611, public domain), Debian/Ubuntu package bible-kjv-text"


def fatal(msg, code=1):
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def apt_install(packages, why):
    """apt-get install `packages` (as root, non-interactive); refreshes the package lists once if needed."""
    if shutil.which("apt-get") is None:
        fatal(f"{why}, and this is not a Debian/Ubuntu system (no apt-get) HINT: tokenize any text "
              f"you have with dev/data/tokenize_text.py, or fetch FineWeb with dev/data/fineweb.py")
    if os.geteuid() != 0:
        fatal(f"{why} HINT: sudo apt-get install {' '.join(packages)}, then run this again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"installing {' '.join(packages)} with apt-get ({why})", flush=True)
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        # a fresh machine may never have fetched the package lists
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            fatal(f"apt-get install {' '.join(packages)} failed HINT: run it by hand to see why")


def ensure_sentencepiece():
    try:
        import sentencepiece  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("OFFLINE_DATA_REEXEC"):
        fatal(f"{sys.executable}: still no sentencepiece module after installing python3-sentencepiece "
              f"HINT: pip install sentencepiece")
    # Debian's python3-sentencepiece is for Debian's python: run again with that one, after
    # installing the package if it lacks it too
    os.environ["OFFLINE_DATA_REEXEC"] = "1"
    debian = "/usr/bin/python3"
    has_it = os.path.exists(debian) and subprocess.run(
        [debian, "-c", "import sentencepiece"], stderr=subprocess.DEVNULL).returncode == 0
    if not has_it:
        apt_install(["python3-sentencepiece"], f"the sentencepiece module is missing for {sys.executable}")
    os.execv(debian, [debian, *sys.argv])  # a fresh start sees the new module


def bible_text():
    """The whole KJV as printed by `bible` (one chapter heading line, then indented numbered verses)."""
    exe = shutil.which("bible") or ("/usr/bin/bible" if os.path.exists("/usr/bin/bible") else None)
    if exe is None or not os.path.exists("/usr/lib/bible.data"):
        apt_install(["bible-kjv", "bible-kjv-text"], "the King James Bible text is not installed")
        exe = shutil.which("bible") or "/usr/bin/bible"
    # -l: wrap lines at that many columns, i.e. never; stdin closed so it cannot wait for commands
    r = subprocess.run([exe, "-l", "100000", BIBLE_RANGE], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        fatal(f"{exe}: exit status {r.returncode}: {r.stderr.decode(errors='replace').strip()[:200]}")
    return r.stdout.decode("utf-8", errors="replace")


def chapters(text):
    """Split `bible` output into chapter documents: 'Genesis 1\\nIn the beginning...\\nAnd the earth...'."""
    docs, cur = [], None
    for line in text.split("\n"):
        if not line.strip():
            continue
        if not line[0].isspace():  # a heading: "Genesis 1", "Song of Solomon 3"
            cur = [line.strip()]
            docs.append(cur)
        elif cur is not None:
            cur.append(re.sub(r"^\s*\d+\s+", "", line).strip())  # drop the verse number
    docs = [d for d in docs if len(d) > 1]
    if len(docs) < 1000:
        fatal(f"bible printed {len(docs)} chapters, expected 1189: unexpected output format")
    return ["\n".join(d) for d in docs]


def read_marker(path):
    try:
        with open(path, encoding="utf-8") as f:
            return dict(line.split(": ", 1) for line in f.read().splitlines() if ": " in line)
    except OSError:
        return None


def write_marker(path, fields):
    text = ("This folder holds an OFFLINE STAND-IN dataset built by dev/data/offline_data.py. It is NOT FineWeb:\n"
            "losses and bits per byte measured on it are not comparable with the parameter-golf leaderboard.\n"
            "dev/data/fineweb.py (make data, when huggingface.co is reachable) replaces it with the real data.\n\n"
            + "".join(f"{k}: {v}\n" for k, v in fields.items()))
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description="Build the offline stand-in dataset (King James Bible, NOT FineWeb).")
    ap.add_argument("--out", default="data", help="data root (default ./data)")
    ap.add_argument("--name", default="fineweb10B_sp1024",
                    help="dataset folder under OUT/datasets (default: train_gpt's default, fineweb10B_sp1024)")
    ap.add_argument("--tokenizer-name", default="fineweb_1024_bpe",
                    help="tokenizer file OUT/tokenizers/NAME.model (default: train_gpt's default, fineweb_1024_bpe)")
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--val-tokens", type=int, default=300_000,
                    help="validation = the first chapters (after the shuffle) up to this many tokens (default 300,000)")
    ap.add_argument("--chapters", type=int, default=0,
                    help="use only the first N chapters after the shuffle (a quicker, smaller build; default all)")
    ap.add_argument("--shard-tokens", type=int, default=tokenize_text.DEFAULT_SHARD_TOKENS)
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete build is there")
    args = ap.parse_args()

    t0 = time.time()
    ds_dir = os.path.join(args.out, "datasets", args.name)
    tok_model = os.path.join(args.out, "tokenizers", args.tokenizer_name + ".model")
    tok_files = [tok_model, tok_model[:-len(".model")] + ".vocab"]
    marker_path = os.path.join(ds_dir, MARKER)
    settings = (f"chapters={args.chapters or 'all'} val_tokens={args.val_tokens} vocab={args.vocab_size} "
                f"shard_tokens={args.shard_tokens} seed={SEED}")

    # what is there already: our complete build (done), our old or broken one (rebuild), or
    # someone else's data, e.g. real FineWeb (leave it alone)
    marker = read_marker(marker_path)
    present = [p for p in (os.path.join(ds_dir, n) for n in
                           (sorted(os.listdir(ds_dir)) if os.path.isdir(ds_dir) else []))
               if re.fullmatch(r"fineweb_(train|val)_\d+\.bin", os.path.basename(p))]
    if marker is None:
        theirs = present + [p for p in tok_files if os.path.exists(p)]
        if theirs:
            fatal(f"{theirs[0]}: already there and not written by this builder (FineWeb?): not overwriting it "
                  f"HINT: use it as it is, or --name/--tokenizer-name for another place")
    elif (not args.force and marker.get("status") == "complete" and marker.get("settings") == settings
          and marker.get("tokenizer") == tok_model and os.path.isfile(tok_model) and present):
        try:
            for p in present:
                shards.read_header(p)
            print(f"{ds_dir}: the offline stand-in dataset (NOT FineWeb) is already built; --force rebuilds it")
            return
        except shards.ShardError as e:
            print(f"{e}: rebuilding")

    ensure_sentencepiece()
    os.makedirs(ds_dir, exist_ok=True)
    fields = {"source": SOURCE, "tokenizer": tok_model, "settings": settings, "status": "building"}
    write_marker(marker_path, fields)  # first, so an interrupted build is still known to be ours
    for p in present + [p for p in tok_files if os.path.exists(p)]:
        os.remove(p)

    docs = chapters(bible_text())
    random.Random(SEED).shuffle(docs)
    if args.chapters > 0:
        docs = docs[:args.chapters]
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"offline stand-in: {len(docs)} chapters of the King James Bible, {nbytes / 1e6:.1f} MB of text "
          f"(NOT FineWeb)", flush=True)
    threads = os.cpu_count() or 1
    sp = tokenize_text.train_tokenizer(docs, tok_model, args.vocab_size, threads)
    if sp.bos_id() != tokenize_text.BOS_ID:
        fatal(f"{tok_model}: BOS id {sp.bos_id()}, expected {tokenize_text.BOS_ID}")
    stats = tokenize_text.tokenize_docs(docs, sp, ds_dir, val_tokens=args.val_tokens,
                                        shard_tokens=args.shard_tokens, threads=threads)
    if stats["docs_train"] == 0:
        fatal(f"--val-tokens {args.val_tokens}: all {len(docs)} chapters went to validation, none to train")
    fields.update(status="complete", docs_val=stats["docs_val"], docs_train=stats["docs_train"],
                  tokens_val=stats["tokens_val"], tokens_train=stats["tokens_train"])
    write_marker(marker_path, fields)

    bar = "=" * 78
    print(f"{bar}\n Built the OFFLINE STAND-IN dataset in {time.time() - t0:.0f}s. This is NOT FineWeb.\n"
          f"   text:      {SOURCE}\n"
          f"   data:      {ds_dir}/  val {stats['tokens_val']:,} tokens ({stats['docs_val']} chapters), "
          f"train {stats['tokens_train']:,} tokens ({stats['docs_train']} chapters)\n"
          f"   tokenizer: {tok_model} (vocab {sp.vocab_size()}, trained on this text)\n"
          f" These are train_gpt's default paths (DATA_PATH, TOKENIZER_PATH), so ./train_gpt runs on it\n"
          f" as it is. Losses and bits per byte are NOT comparable with the parameter-golf leaderboard.\n"
          f" For the real data: python3 dev/data/fineweb.py (needs huggingface.co; replaces this).\n{bar}")


if __name__ == "__main__":
    main()
