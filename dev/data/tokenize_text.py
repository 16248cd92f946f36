#!/usr/bin/python3
"""tokenize_text.py: turn your own text into token shards of the FineWeb format.

    /usr/bin/python3 dev/data/tokenize_text.py corpus.jsonl --tokenizer data/tokenizers/fineweb_1024_bpe.model \\
        --out-dir data/datasets/mytext_sp1024
    /usr/bin/python3 dev/data/tokenize_text.py book1.txt book2.txt --docs file --train-tokenizer \\
        --tokenizer data/tokenizers/mytext_1024_bpe.model --out-dir data/datasets/mytext_sp1024

Input: text files or JSON-lines files (one JSON object per line, the document in its "text"
field; .gz files are read too). A text file is cut into documents at blank lines (--docs para,
the default), at every line (--docs line), at lines equal to a separator (--doc-sep LINE), or
is one document as a whole (--docs file).

Output, as the challenge's export does it (shards.py has the format):
  - every document becomes [BOS] + sp.encode(text), no EOS;
  - the FIRST documents are the validation split (--val-docs N, or --val-tokens N: the first
    documents until N tokens; default 5% of the documents, at most 50,000 as in the challenge),
    so give --shuffle SEED if your input is ordered (by source, by date...);
  - each split's token stream is cut every --shard-tokens tokens (default 100M, as FineWeb),
    documents running on across the cut, into fineweb_val_NNNNNN.bin / fineweb_train_NNNNNN.bin.

--train-tokenizer first trains a SentencePiece model with the challenge's settings (BPE, byte
fallback, split digits, nmt_nfkc normalization, no dummy prefix, ids pad 0, bos 1, eos 2, unk 3)
on the documents and writes it to --tokenizer (MODEL.model and MODEL.vocab).

Then train with DATA_PATH=<out-dir> TOKENIZER_PATH=<model> VOCAB_SIZE=<vocab>.

Needs the sentencepiece Python module (Debian: apt-get install python3-sentencepiece).
"""
import argparse
import gzip
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402  (dev/data/shards.py: the shard format)

BOS_ID = 1
DEFAULT_SHARD_TOKENS = 10**8
MAX_AUTO_VAL_DOCS = 50_000  # the challenge's validation split: its first 50,000 documents
ENCODE_BATCH = 1024


def fatal(msg, code=1):
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def import_sentencepiece():
    try:
        import sentencepiece
        return sentencepiece
    except ImportError:
        fatal(f"the sentencepiece Python module is missing for {sys.executable} "
              f"HINT: apt-get install python3-sentencepiece and run this with /usr/bin/python3, "
              f"or pip install sentencepiece")


# ----------------------------------------------------------------------------
# reading documents

def open_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline=None)
    return open(path, "r", encoding="utf-8", errors="replace", newline=None)


def iter_jsonl(path, field):
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                fatal(f"{path}:{lineno}: not a JSON line ({e})")
            text = obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                fatal(f"{path}:{lineno}: no string field '{field}' (set --text-field)")
            yield text


def iter_text(path, mode, sep):
    with open_text(path) as f:
        if mode == "file":
            text = f.read()
            if text.strip():
                yield text
            return
        cur = []
        for line in f:
            line = line.rstrip("\n")
            if mode == "line":
                if line.strip():
                    yield line
                continue
            # para / sep: gather lines until a blank line (para) or the separator line (sep)
            end = (line.strip() == "") if sep is None else (line == sep)
            if end:
                if any(s.strip() for s in cur):
                    yield "\n".join(cur).strip("\n")
                cur = []
            else:
                cur.append(line)
        if any(s.strip() for s in cur):
            yield "\n".join(cur).strip("\n")


def input_format(path, fmt):
    if fmt != "auto":
        return fmt
    base = path[:-3] if path.endswith(".gz") else path
    return "jsonl" if base.endswith((".jsonl", ".json", ".ndjson")) else "text"


def iter_docs(args):
    for path in args.inputs:
        if input_format(path, args.format) == "jsonl":
            yield from iter_jsonl(path, args.text_field)
        else:
            yield from iter_text(path, "sep" if args.doc_sep is not None else args.docs, args.doc_sep)


# ----------------------------------------------------------------------------
# the tokenizer

def train_tokenizer(docs, model_path, vocab_size, threads, log=print):
    """Train a SentencePiece BPE model with the challenge's settings on an iterable of documents.

    Documents are fed line by line: SentencePiece skips "sentences" longer than
    max_sentence_length (4192 bytes), which would drop most long documents, and BPE pieces never
    cross whitespace anyway, so lines lose nothing."""
    spm = import_sentencepiece()
    if not model_path.endswith(".model"):
        fatal(f"{model_path}: the tokenizer path must end in .model")
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)

    def lines():
        for doc in docs:
            for line in doc.replace("\x00", " ").split("\n"):
                line = line.strip()
                if line:
                    yield line

    t0 = time.time()
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines(),
        model_prefix=model_path[:-len(".model")],
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.999,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        hard_vocab_limit=False,
        num_threads=max(1, threads),
        minloglevel=2,  # quiet: errors only
    )
    sp = spm.SentencePieceProcessor(model_file=model_path)
    log(f"tokenizer: trained {model_path} (vocab {sp.vocab_size()}) in {time.time() - t0:.1f}s")
    return sp


def load_tokenizer(model_path):
    spm = import_sentencepiece()
    if not os.path.isfile(model_path):
        fatal(f"{model_path}: no such tokenizer model HINT: pass --train-tokenizer to train one")
    try:
        sp = spm.SentencePieceProcessor(model_file=model_path)
    except Exception as e:  # sentencepiece raises plain RuntimeError/OSError here
        fatal(f"{model_path}: not a SentencePiece model ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if sp.bos_id() != BOS_ID:
        fatal(f"{model_path}: BOS id is {sp.bos_id()}, the shard format needs {BOS_ID}")
    if sp.vocab_size() > 65536:
        fatal(f"{model_path}: vocab {sp.vocab_size()} does not fit the uint16 shards")
    return sp


# ----------------------------------------------------------------------------
# documents -> shards

def clear_old_shards(out_dir, overwrite):
    old = sorted(n for n in os.listdir(out_dir) if n.startswith("fineweb_") and n.endswith(".bin"))
    if old and not overwrite:
        fatal(f"{out_dir}: already holds {len(old)} shards ({old[0]}...) HINT: pass --overwrite to replace them")
    for n in old:
        os.remove(os.path.join(out_dir, n))


def tokenize_docs(docs, sp, out_dir, val_docs=None, val_tokens=None, shard_tokens=DEFAULT_SHARD_TOKENS,
                  threads=1, log=print):
    """Write [BOS]+encode(doc) for every document: the first ones (val_docs documents, or until
    val_tokens tokens) to the val shards, the rest to the train shards. Returns the stats."""
    assert (val_docs is None) != (val_tokens is None)
    val = shards.ShardWriter(out_dir, "val", shard_tokens)
    train = shards.ShardWriter(out_dir, "train", shard_tokens)
    stats = {"docs_val": 0, "docs_train": 0, "bytes_val": 0, "bytes_train": 0}
    t0 = last = time.time()
    batch = []

    def flush():
        for text, ids in zip(batch, sp.encode(batch, out_type=int, num_threads=max(1, threads))):
            in_val = (stats["docs_val"] < val_docs) if val_docs is not None else (val.tokens < val_tokens)
            split = "val" if in_val else "train"
            (val if in_val else train).add([BOS_ID] + ids)
            stats[f"docs_{split}"] += 1
            stats[f"bytes_{split}"] += len(text.encode("utf-8"))
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) == ENCODE_BATCH:
            flush()
            if time.time() - last > 10:
                last = time.time()
                log(f"  {stats['docs_val'] + stats['docs_train']} documents, "
                    f"{val.tokens + train.tokens} tokens, {time.time() - t0:.0f}s")
    flush()
    stats["files_val"] = val.close()
    stats["files_train"] = train.close()
    stats["tokens_val"], stats["tokens_train"] = val.tokens, train.tokens
    stats["seconds"] = time.time() - t0
    return stats


def summary(stats, out_dir):
    lines = [f"wrote {out_dir}/:"]
    for split in ("val", "train"):
        files, toks, nbytes = stats[f"files_{split}"], stats[f"tokens_{split}"], stats[f"bytes_{split}"]
        ratio = f", {nbytes / max(toks - stats[f'docs_{split}'], 1):.2f} bytes/token" if toks else ""
        lines.append(f"  {split:5s}: {stats[f'docs_{split}']:,} documents, {toks:,} tokens, "
                     f"{len(files)} shard{'s' if len(files) != 1 else ''}{ratio}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description="Tokenize text or JSON-lines documents into FineWeb-format shards.")
    ap.add_argument("inputs", nargs="+", help="text files or .jsonl files (.gz is fine)")
    ap.add_argument("--out-dir", required=True, help="where the shards go (e.g. data/datasets/mytext_sp1024)")
    ap.add_argument("--tokenizer", required=True, help="SentencePiece .model to use (or to train, see --train-tokenizer)")
    ap.add_argument("--train-tokenizer", action="store_true", help="train --tokenizer on these documents first")
    ap.add_argument("--vocab-size", type=int, default=1024, help="vocab of the trained tokenizer (default 1024)")
    ap.add_argument("--tokenizer-train-docs", type=int, default=0,
                    help="train the tokenizer on the first N documents only (default 0 = all)")
    ap.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                    help="input format (default: by extension, .jsonl/.json/.ndjson = jsonl)")
    ap.add_argument("--text-field", default="text", help="JSON field holding the document (default text)")
    ap.add_argument("--docs", choices=("para", "line", "file"), default="para",
                    help="documents of a text file: paragraphs (blank-line separated, default), lines, "
                         "or the whole file")
    ap.add_argument("--doc-sep", default=None, metavar="LINE",
                    help="documents of a text file are separated by lines equal to LINE (e.g. '<|endoftext|>')")
    ap.add_argument("--val-docs", type=int, default=None,
                    help="the first N documents are the validation split (default 5%% of them, at most 50,000)")
    ap.add_argument("--val-tokens", type=int, default=None,
                    help="or: the first documents until N validation tokens")
    ap.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                    help="tokens per shard file (default 100,000,000 as FineWeb)")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="shuffle the documents (Python's random.Random(SEED)) before the split; holds them in memory")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="tokenizer threads")
    ap.add_argument("--overwrite", action="store_true", help="replace shards already in --out-dir")
    args = ap.parse_args()

    for path in args.inputs:
        if not os.path.isfile(path):
            fatal(f"{path}: no such input file", 2)
    if args.val_docs is not None and args.val_tokens is not None:
        fatal("give --val-docs or --val-tokens, not both", 2)
    if args.shard_tokens < 1:
        fatal("--shard-tokens must be >= 1", 2)
    if args.train_tokenizer and not 8 <= args.vocab_size <= 65536:
        fatal("--vocab-size must be in 8..65536", 2)
    os.makedirs(args.out_dir, exist_ok=True)
    clear_old_shards(args.out_dir, args.overwrite)
    t0 = time.time()

    if args.shuffle is not None:
        import random
        all_docs = list(iter_docs(args))
        random.Random(args.shuffle).shuffle(all_docs)
        docs = lambda: iter(all_docs)  # noqa: E731
    else:
        docs = lambda: iter_docs(args)  # noqa: E731  (re-reads the files each time)
    n_docs = sum(1 for _ in docs())
    if n_docs < 2:
        fatal(f"{args.inputs[0]}: {n_docs} document(s) found: need at least 2 (one val, one train) "
              f"HINT: --docs para or line cuts a text file into more documents")
    val_docs, val_tokens = args.val_docs, args.val_tokens
    if val_docs is None and val_tokens is None:
        val_docs = max(1, min(MAX_AUTO_VAL_DOCS, n_docs // 20))
    if val_docs is not None and not 1 <= val_docs < n_docs:
        fatal(f"--val-docs {val_docs}: there are {n_docs} documents; val needs 1 to {n_docs - 1}", 2)
    print(f"{n_docs:,} documents in {len(args.inputs)} file(s); validation = the first "
          + (f"{val_docs:,} documents" if val_docs is not None else f"documents up to {val_tokens:,} tokens"))

    if args.train_tokenizer:
        train_docs = docs()
        if args.tokenizer_train_docs > 0:
            import itertools
            train_docs = itertools.islice(train_docs, args.tokenizer_train_docs)
        train_tokenizer(train_docs, args.tokenizer, args.vocab_size, args.threads)
    sp = load_tokenizer(args.tokenizer)

    stats = tokenize_docs(docs(), sp, args.out_dir, val_docs, val_tokens, args.shard_tokens, args.threads)
    if stats["docs_train"] == 0:
        fatal(f"--val-tokens {val_tokens}: every document went to validation, none left to train on", 2)
    print(summary(stats, args.out_dir))
    print(f"done in {time.time() - t0:.1f}s. Train with:\n  DATA_PATH={args.out_dir} "
          f"TOKENIZER_PATH={args.tokenizer} VOCAB_SIZE={sp.vocab_size()}")


if __name__ == "__main__":
    main()
