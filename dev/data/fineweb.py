#!/usr/bin/env python3
"""fineweb.py: download the published parameter-golf FineWeb export (Python standard library only).

    python3 dev/data/fineweb.py                      val split + 1 train shard (~325 MB)
    python3 dev/data/fineweb.py --train-shards 80    what the record runs train on (~16 GB)

The challenge publishes its tokenized FineWeb on Hugging Face (dataset willdepueoai/parameter-golf,
everything under datasets/). Its manifest.json lists, for every tokenizer variant, how many train
and val shards there are and how many tokens each split holds. We fetch the manifest, then the
tokenizer, the val shard(s) and the first N train shards of the variant, into

    data/manifest.json
    data/tokenizers/fineweb_1024_bpe.model (+ .vocab)
    data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin, fineweb_train_000000.bin, ...

which are the paths train_gpt reads by default. Train shard i is the i-th 100M-token slice of one
fixed shuffled stream, so N shards are always the same prefix of the data.

Checks: every shard's exact size follows from the manifest (shard_size tokens each, the last one
of a split holds the rest), so a file of the wrong size, locally or on the server, is an error;
a downloaded shard's header must agree with its size. Downloads go to NAME.part and are renamed
when complete; an interrupted download resumes from the .part file (HTTP Range), or starts again
if the server does not do ranges. Files already present with the right size are skipped, so
running it again is cheap and `--train-shards 10` after `--train-shards 1` fetches 9 more.

No Hugging Face client is needed: plain HTTPS GETs of
    https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets/<path>
The base URL can be changed with --base-url or FINEWEB_BASE_URL (a mirror, or the test's local
server).

Exit status: 0 done, 1 error (bad or mismatched data), 2 bad usage, 3 server unreachable (what
`make data` takes as "offline", building a stand-in dataset instead: dev/data/offline_data.py).
If the server is unreachable but everything requested is already here (checked against the saved
manifest), that is success.
"""
import argparse
import glob
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402  (dev/data/shards.py: the shard format)

DEFAULT_BASE_URL = "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets"
DEFAULT_SHARD_TOKENS = 10**8  # the export cuts each split every 100M tokens (manifest: shard_size)
OFFLINE_MARKER = "NOT_FINEWEB.txt"  # written by offline_data.py into the stand-in dataset's folder
EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
CHUNK = 1 << 20


class Unreachable(Exception):
    """The server could not be reached at all (no route, DNS, refused, timeout)."""


def fatal(msg, code=EXIT_ERROR):
    # an unreachable server is expected offline (`make data` then builds the stand-in): a notice
    print(f"{'notice' if code == EXIT_UNREACHABLE else 'error'}: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def say(msg):
    print(msg, flush=True)


def human(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------
# the manifest: which files exist and how big they must be

def find_entry(entries, name, what, manifest_url):
    for e in entries or []:
        if isinstance(e, dict) and e.get("name") == name:
            return e
    names = ", ".join(str(e.get("name")) for e in entries or [] if isinstance(e, dict))
    fatal(f"{manifest_url}: no {what} named '{name}' in the manifest (it has: {names or 'none'})")


def split_token_counts(stats, split, shard_tokens, manifest_url):
    """Token count of every shard of a split: shard_tokens each, the last one holds the rest.
    (None for each when the manifest gives no token count: then only the server's Content-Length
    and the shard header check the size.)"""
    try:
        files = int(stats[f"files_{split}"])
    except (KeyError, TypeError, ValueError):
        fatal(f"{manifest_url}: dataset stats lack files_{split}")
    try:
        tokens = int(stats[f"tokens_{split}"])
    except (KeyError, TypeError, ValueError):
        return [None] * max(files, 0)
    if files < 0 or tokens < 0 or (files == 0) != (tokens == 0) or not (
            (files - 1) * shard_tokens < tokens <= files * shard_tokens or files == 0):
        fatal(f"{manifest_url}: {files} {split} files cannot hold {tokens} tokens at {shard_tokens} per file")
    return [shard_tokens] * (files - 1) + [tokens - (files - 1) * shard_tokens] if files else []


def tokenizer_paths(entry):
    """Remote paths (relative to the base URL) of the tokenizer's files: tokenizers/NAME."""
    paths = []
    for key in ("model_path", "vocab_path", "path"):
        value = entry.get(key)
        if value:
            # the export writes them as tokenizers/NAME; keep only that part of anything longer
            value = str(value).replace("\\", "/")
            i = value.rfind("tokenizers/")
            paths.append(value[i:] if i >= 0 else "tokenizers/" + os.path.basename(value))
    return paths


def plan(manifest, variant, train_shards, manifest_url):
    """The files to fetch: (remote path, local path relative to --out, expected bytes or None)."""
    dataset_name = f"fineweb10B_{variant}"
    ds = find_entry(manifest.get("datasets"), dataset_name, "dataset", manifest_url)
    shard_tokens = int(manifest.get("shard_size") or DEFAULT_SHARD_TOKENS)
    stats = ds.get("stats") or {}
    val = split_token_counts(stats, "val", shard_tokens, manifest_url)
    train = split_token_counts(stats, "train", shard_tokens, manifest_url)
    if train_shards > len(train):
        fatal(f"--train-shards {train_shards}: {dataset_name} has only {len(train)} train shards", EXIT_USAGE)
    if not val:
        fatal(f"{manifest_url}: {dataset_name} has no validation shards")
    tok = find_entry(manifest.get("tokenizers"), ds.get("tokenizer_name"), "tokenizer", manifest_url)
    files = []
    for path in tokenizer_paths(tok):
        files.append((path, os.path.join("tokenizers", os.path.basename(path)), None))
    for split, counts in (("val", val), ("train", train[:train_shards])):
        for i, count in enumerate(counts):
            name = shards.shard_name(split, i)
            files.append((f"datasets/{dataset_name}/{name}", os.path.join("datasets", dataset_name, name),
                          shards.shard_bytes(count) if count is not None else None))
    return dataset_name, files


# ----------------------------------------------------------------------------
# HTTP

class Fetcher:
    def __init__(self, base_url, timeout, retries):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries = timeout, retries

    def url(self, remote):
        return f"{self.base_url}/{remote}"

    def open(self, url, start=0):
        """GET url (from byte `start` on); HTTPError for HTTP failures, Unreachable for the rest."""
        req = urllib.request.Request(url, headers={"User-Agent": "parameter-golf-llmc/1"})
        if start > 0:
            req.add_header("Range", f"bytes={start}-")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{url}: {getattr(e, 'reason', e)}") from e

    def get_manifest(self, url):
        """The manifest, into memory. This first request is also the "are we online?" test, so
        it waits at most 15 s and tries twice: offline, `make data` should fall back quickly."""
        timeout, self.timeout = self.timeout, min(self.timeout, 15)
        try:
            for attempt in range(2):
                try:
                    with self.open(url) as r:
                        return r.read()
                except urllib.error.HTTPError as e:
                    if e.code < 500 and e.code != 407:  # 5xx, proxy auth: a gateway, not the server
                        fatal(f"{url}: HTTP {e.code} {e.reason}")
                    err = Unreachable(f"{url}: HTTP {e.code} {e.reason}")
                except (Unreachable, OSError, http.client.HTTPException) as e:
                    err = Unreachable(str(e))
                if attempt == 0:
                    time.sleep(1)
            raise err
        finally:
            self.timeout = timeout

    def remote_size(self, url):
        """The size the server reports for url (None if it does not say or cannot be asked)."""
        try:
            with self.open(url) as r:
                n = r.headers.get("Content-Length")
                return int(n) if n is not None else None
        except (urllib.error.HTTPError, Unreachable, OSError, http.client.HTTPException, ValueError):
            return None

    def download(self, url, dest, expected):
        """url -> dest via dest.part, resuming a partial .part; checks the size (if `expected`)."""
        part = dest + ".part"
        name = os.path.basename(dest)
        for attempt in range(self.retries + 1):
            have = os.path.getsize(part) if os.path.exists(part) else 0
            if expected is not None and have > expected:
                say(f"  {name}: partial file is larger than {expected} bytes: starting again")
                have = 0
            if expected is not None and have == expected:
                break
            try:
                self._transfer(url, part, have, expected, name)
                break
            except urllib.error.HTTPError as e:
                if e.code == 416 and have > 0:  # range past the end: the .part is no good
                    say(f"  {name}: server refused to resume at byte {have}: starting again")
                    os.remove(part)
                    continue
                if e.code < 500 or attempt == self.retries:  # 5xx may pass: retry those
                    fatal(f"{url}: HTTP {e.code} {e.reason}")
                say(f"  {name}: HTTP {e.code} {e.reason}; retrying in {min(2 ** attempt, 30)}s")
                time.sleep(min(2 ** attempt, 30))
            except (Unreachable, OSError, http.client.HTTPException) as e:
                if attempt == self.retries:
                    fatal(f"{url}: download failed after {self.retries + 1} attempts ({e}); run again to resume")
                wait = min(2 ** attempt, 30)
                got = os.path.getsize(part) if os.path.exists(part) else 0
                say(f"  {name}: {e}; retrying in {wait}s (have {got} bytes)")
                time.sleep(wait)
        size = os.path.getsize(part)
        if expected is not None and size != expected:
            os.remove(part)
            fatal(f"{url}: got {size} bytes, the manifest says {expected} (removed the partial file)")
        if name.endswith(".bin"):
            try:
                shards.read_header(part)
            except shards.ShardError as e:
                os.remove(part)
                fatal(f"{e} (downloaded from {url}; removed it)")
        os.replace(part, dest)

    def _transfer(self, url, part, have, expected, name):
        with self.open(url, have) as r:
            length = r.headers.get("Content-Length")
            length = int(length) if length is not None else None
            if have > 0 and r.status == 206:
                start = parse_content_range(r.headers.get("Content-Range"))
                if start != have:  # not what we asked for: start again from zero
                    os.remove(part)
                    raise http.client.HTTPException(f"server resumed at byte {start}, asked for {have}")
                mode = "ab"
                say(f"  {name}: resuming at {human(have)}")
            else:
                if have > 0:
                    say(f"  {name}: the server does not resume downloads: fetching it again from the start")
                have, mode = 0, "wb"
            total = have + length if length is not None else None
            if expected is not None and total is not None and total != expected:
                fatal(f"{url}: the server has {total} bytes, the manifest says {expected} "
                      f"(mismatched mirror or manifest?)")
            progress = Progress(name, have, total if total is not None else expected)
            got = have
            with open(part, mode) as f:
                while True:
                    chunk = r.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    progress.update(got)
                    if expected is not None and got > expected:
                        break  # a wrong file: stop reading, the size check reports it
            progress.done(got)
            if total is not None and got < total:
                raise http.client.IncompleteRead(b"", total - got)


def parse_content_range(value):
    # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return -1


class Progress:
    """One line per file; on a terminal it updates in place, otherwise every ~10 s."""

    def __init__(self, name, start, total):
        self.name, self.start, self.total = name, start, total
        self.t0 = self.last = time.time()
        self.tty = sys.stdout.isatty()

    def line(self, got):
        dt = max(time.time() - self.t0, 1e-6)
        of = f" / {human(self.total)}" if self.total else ""
        return f"  {self.name}: {human(got)}{of}  {human((got - self.start) / dt)}/s"

    def update(self, got):
        now = time.time()
        if self.tty and now - self.last > 0.2:
            print("\r" + self.line(got), end="", flush=True)
            self.last = now
        elif not self.tty and now - self.last > 10:
            say(self.line(got))
            self.last = now

    def done(self, got):
        print(("\r" if self.tty else "") + self.line(got), flush=True)


# ----------------------------------------------------------------------------
# local state

def local_problem(path, expected):
    """What is wrong with the file at `path` (None: complete). Shards: exact size, valid header."""
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    if expected is not None and size != expected:
        return f"{size} bytes, expected {expected} bytes from the manifest"
    if path.endswith(".bin"):
        try:
            shards.read_header(path)
        except shards.ShardError as e:
            return str(e).split(": ", 1)[1]
    return None


def remove_offline_standin(out, dataset_name, files):
    """offline_data.py writes a stand-in (not FineWeb) at the default paths: clear it away."""
    ds_dir = os.path.join(out, "datasets", dataset_name)
    marker = os.path.join(ds_dir, OFFLINE_MARKER)
    if not os.path.exists(marker):
        return
    say(f"{ds_dir} holds the offline stand-in dataset (not FineWeb): replacing it and its tokenizer")
    for path in glob.glob(os.path.join(ds_dir, "fineweb_*.bin")):
        os.remove(path)
    for _, local, expected in files:
        if expected is None and os.path.exists(os.path.join(out, local)):
            os.remove(os.path.join(out, local))
    os.remove(marker)


def main():
    ap = argparse.ArgumentParser(
        description="Download the parameter-golf FineWeb export (val split, first N train shards, tokenizer).",
        epilog="Exit status 3 means the server could not be reached (make data then builds the offline stand-in).")
    ap.add_argument("--train-shards", type=int, default=1,
                    help="number of 100M-token train shards to fetch (default 1; the record runs use 80)")
    ap.add_argument("--variant", default="sp1024", help="tokenizer variant (default sp1024)")
    ap.add_argument("--out", default="data", help="data root (default ./data)")
    ap.add_argument("--base-url", default=os.environ.get("FINEWEB_BASE_URL") or DEFAULT_BASE_URL,
                    help="where manifest.json, datasets/ and tokenizers/ live "
                         "(default $FINEWEB_BASE_URL or the Hugging Face dataset)")
    ap.add_argument("--force", action="store_true",
                    help="replace local files that do not match the manifest instead of stopping")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait on the network (default 60)")
    ap.add_argument("--retries", type=int, default=5, help="retries of an interrupted download (default 5)")
    args = ap.parse_args()
    if args.train_shards < 0:
        fatal("--train-shards must be >= 0", EXIT_USAGE)
    if not args.base_url.startswith(("http://", "https://")):
        fatal(f"--base-url must be an http(s) URL, got '{args.base_url}'", EXIT_USAGE)

    fetcher = Fetcher(args.base_url, args.timeout, max(0, args.retries))
    manifest_url = fetcher.url("manifest.json")
    saved_manifest = os.path.join(args.out, "manifest.json")
    t0 = time.time()

    # 1. the manifest (or, offline, the one saved last time)
    try:
        raw = fetcher.get_manifest(manifest_url)
        online = True
    except Unreachable as e:
        if not os.path.isfile(saved_manifest):
            fatal(f"cannot reach {e} HINT: offline? `make data` builds a small stand-in dataset instead "
                  f"(dev/data/offline_data.py); set FINEWEB_BASE_URL to use a mirror", EXIT_UNREACHABLE)
        say(f"cannot reach {args.base_url}; checking the local files against the saved {saved_manifest}")
        with open(saved_manifest, "rb") as f:
            raw = f.read()
        online = False
        unreachable = str(e)
    try:
        manifest = json.loads(raw.decode("utf-8"))
        assert isinstance(manifest, dict)
    except (UnicodeDecodeError, ValueError, AssertionError):
        fatal(f"{manifest_url}: not a JSON manifest ({len(raw)} bytes)")
    dataset_name, files = plan(manifest, args.variant, args.train_shards, manifest_url)

    if not online:
        missing = [l for _, l, expected in files if local_problem(os.path.join(args.out, l), expected)]
        marker = os.path.join(args.out, "datasets", dataset_name, OFFLINE_MARKER)
        if missing or os.path.exists(marker):
            what = f"{len(missing)} of {len(files)} files missing or incomplete" if missing else "the offline stand-in is here"
            fatal(f"cannot reach {unreachable} ({what}) HINT: offline? `make data` builds a small stand-in "
                  f"dataset instead", EXIT_UNREACHABLE)
        say(f"all {len(files)} files are present and match the saved manifest")
        return

    os.makedirs(args.out, exist_ok=True)
    with open(saved_manifest + ".tmp", "wb") as f:
        f.write(raw)
    os.replace(saved_manifest + ".tmp", saved_manifest)
    remove_offline_standin(args.out, dataset_name, files)

    # 2. what is already here: complete files are skipped, wrong ones stop us (or go, with --force)
    todo = []
    for remote, local, expected in files:
        path = os.path.join(args.out, local)
        if os.path.exists(path):
            problem = local_problem(path, expected)
            if problem is None and expected is None:  # the tokenizer: compare with the server's size
                size = fetcher.remote_size(fetcher.url(remote))
                if size is not None and os.path.getsize(path) != size:
                    problem = f"{os.path.getsize(path)} bytes, expected {size} bytes on the server"
            if problem is None:
                continue
            if not args.force:
                fatal(f"{path}: {problem} HINT: a different or damaged file: delete it, "
                      f"or pass --force to replace it")
            os.remove(path)
        todo.append((remote, local, expected))
    need = sum(e or 0 for _, _, e in todo) - sum(
        os.path.getsize(os.path.join(args.out, l) + ".part") for _, l, _ in todo
        if os.path.exists(os.path.join(args.out, l) + ".part"))
    free = shutil.disk_usage(args.out).free
    if need > free:
        fatal(f"{args.out}: needs {human(need)} for {len(todo)} files, only {human(free)} free")
    say(f"{dataset_name}: {len(files)} files ({len(files) - len(todo)} already here), "
        f"{human(max(need, 0))} to fetch from {args.base_url}")

    # 3. fetch
    for remote, local, expected in todo:
        path = os.path.join(args.out, local)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fetcher.download(fetcher.url(remote), path, expected)

    ds_dir = os.path.join(args.out, "datasets", dataset_name)
    toks = [l for _, l, e in files if e is None and l.endswith(".model")]
    say(f"done in {time.time() - t0:.1f}s: {ds_dir}/ ({args.train_shards} train shards + val)"
        + (f", {os.path.join(args.out, toks[0])}" if toks else ""))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        fatal("interrupted; run again to resume", 130)
