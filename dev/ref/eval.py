"""eval.py: validation loss and bits per byte, the reference's two ways (docs/RECIPE.md "Scoring").

  eval_val          non-overlapping seq_len windows over the val tokens, in batches of
                    batch_seqs windows; each batch's mean loss is weighted by its token count.
  eval_val_sliding  windows starting at 0, stride, 2*stride, ... while start < N-1 (N = val
                    token count); window length min(seq_len, N-1-start), padded with zeros to
                    seq_len (so RoPE always sees T = seq_len, as in the reference); the first
                    window scores all its positions, every later one its last min(stride, len).
                    Quirk kept on purpose: all windows that reach the end of the data score the
                    same last `stride` targets again (so the final ~stride tokens are counted
                    about seq_len/stride times), exactly as the reference does.

Bytes of a scored target = base_bytes[tgt] + (has_leading_space[tgt] and not is_boundary[prev]);
BPB = (loss / ln 2) * (tokens / bytes). The LUTs come from the sentencepiece module here (the
C++ side parses the .model itself).

Command line:
  python3 dev/ref/eval.py --ckpt X.ckpt --data-path DIR --tokenizer fineweb_1024_bpe.model
        [--max-val-tokens N] [--seq-len T] [--stride 64] [--batch-seqs 32]
        [--device cpu|cuda] [--mode fp32|bf16|fp64] [--no-sliding] [--no-standard] [--ref-rounding]
--ref-rounding rounds the sliding eval's softcapped logits to bf16 before the cross-entropy, as
the record script's sliding eval does (its torch.compile'd forward_logits returns a bf16 tensor),
and leaves the standard eval's alone (there the compiled forward fuses the softcap into the
cross-entropy: the logits stay fp32). ./eval's EVAL_REF_ROUNDING=1 is the same rule.
--max-val-tokens keeps only the first N val tokens (before the cut to whole windows): the full
val set is ~62M tokens, far too much for a CPU.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config as C  # noqa: E402
import train as T  # noqa: E402


def load_val_tokens(data_path, seq_len, max_tokens=None):
    """All val shards concatenated (optionally only the first max_tokens), cut to
    floor((N-1)/seq)*seq + 1 tokens."""
    tokens = torch.cat([T.load_shard(f) for f in T.shard_files(data_path, "val")])
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(f"{data_path}: validation split has {tokens.numel()} tokens, too few for seq_len={seq_len}")
    return tokens[:usable + 1]


def build_luts(tokenizer_path, vocab_size):
    """(base_bytes int16, has_leading_space bool, is_boundary bool), each of size
    max(sp vocab, vocab_size); ids beyond the tokenizer are boundary tokens worth 0 bytes."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    n = int(sp.vocab_size())
    size = max(n, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary)


def scored_bytes(prev, tgt, luts):
    base, space, boundary = (t.to(tgt.device) for t in luts)
    return (base[tgt].to(torch.float64) + (space[tgt] & ~boundary[prev]).to(torch.float64)).sum()


def _bpb(loss_sum, tokens, nbytes):
    loss = loss_sum / tokens
    return loss, (loss / math.log(2.0)) * (tokens / nbytes)


@torch.no_grad()
def eval_val(model, val_tokens, luts, seq_len, batch_seqs):
    """(mean loss, bpb) over non-overlapping seq_len windows, batch_seqs windows per forward."""
    device = model.tok_emb.weight.device
    total_seqs = (val_tokens.numel() - 1) // seq_len
    loss_sum = tokens = nbytes = 0.0
    was_training = model.training
    model.eval()
    for s0 in range(0, total_seqs, batch_seqs):
        s1 = min(s0 + batch_seqs, total_seqs)
        local = val_tokens[s0 * seq_len:s1 * seq_len + 1].to(device)
        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
        with model.autocast():
            batch_loss = model(x, y).detach()
        loss_sum += batch_loss.double().item() * y.numel()
        tokens += y.numel()
        nbytes += scored_bytes(x.reshape(-1), y.reshape(-1), luts).item()
    model.train(was_training)
    return _bpb(loss_sum, tokens, nbytes)


def sliding_windows(n_val_tokens, seq_len, stride):
    """[(start, length, first scored position)] of the sliding eval."""
    total = n_val_tokens - 1
    out = []
    for ws in range(0, total, stride):
        wlen = min(ws + seq_len, total) - ws
        out.append((ws, wlen, 0 if ws == 0 else max(wlen - stride, 0)))
    return out


@torch.no_grad()
def eval_val_sliding(model, val_tokens, luts, seq_len, stride, batch_seqs, ref_rounding=False):
    """(mean loss, bpb) of the sliding-window eval (module doc), batch_seqs windows per forward."""
    device = model.tok_emb.weight.device
    windows = sliding_windows(val_tokens.numel(), seq_len, stride)
    loss_sum = tokens = nbytes = 0.0
    was_training = model.training
    model.eval()
    for b0 in range(0, len(windows), batch_seqs):
        batch = windows[b0:b0 + batch_seqs]
        x = torch.zeros(len(batch), seq_len, dtype=torch.int64)
        y = torch.zeros(len(batch), seq_len, dtype=torch.int64)
        for i, (ws, wlen, _) in enumerate(batch):
            chunk = val_tokens[ws:ws + wlen + 1]
            x[i, :wlen], y[i, :wlen] = chunk[:-1], chunk[1:]
        x, y = x.to(device), y.to(device)
        with model.autocast():
            logits = model.forward_logits(x)
        if ref_rounding:
            logits = logits.to(torch.bfloat16)
        logits = logits if logits.dtype == torch.float64 else logits.float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        nll = nll.reshape(len(batch), seq_len)
        for i, (ws, wlen, s) in enumerate(batch):
            loss_sum += nll[i, s:wlen].double().sum().item()
            tokens += wlen - s
            nbytes += scored_bytes(x[i, s:wlen], y[i, s:wlen], luts).item()
    model.train(was_training)
    return _bpb(loss_sum, tokens, nbytes)


def main(argv):
    ap = argparse.ArgumentParser(prog="eval.py", description="reference val loss / bpb of a .ckpt")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data-path", required=True, help="directory with fineweb_val_*.bin")
    ap.add_argument("--tokenizer", required=True, help="sentencepiece .model")
    ap.add_argument("--max-val-tokens", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None,
                    help="default: TRAIN_SEQ_LEN (standard) and EVAL_SEQ_LEN (sliding) of the ckpt")
    ap.add_argument("--stride", type=int, default=None, help="default: EVAL_STRIDE")
    ap.add_argument("--batch-seqs", type=int, default=None,
                    help="windows per forward (default: VAL_BATCH_SIZE/8/seq for the standard eval, "
                         "EVAL_BATCH_SEQS for the sliding one)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--mode", default=None, choices=["fp32", "fp64", "bf16"])
    ap.add_argument("--no-sliding", action="store_true")
    ap.add_argument("--no-standard", action="store_true")
    ap.add_argument("--ref-rounding", action="store_true",
                    help="round the sliding eval's logits to bf16 (the record script's rounding)")
    args = ap.parse_args(argv)
    mode = args.mode or ("bf16" if args.device == "cuda" else "fp32")
    def run():
        model, cfg = T.load_model(args.ckpt, args.device, mode)
        # the reference's standard eval uses TRAIN_SEQ_LEN, the sliding one EVAL_SEQ_LEN, and the
        # val set is cut to whole windows of the larger of the two
        seq_std = args.seq_len or C.get(cfg, "TRAIN_SEQ_LEN")
        seq_sw = args.seq_len or C.get(cfg, "EVAL_SEQ_LEN")
        stride = args.stride or C.get(cfg, "EVAL_STRIDE")
        val = load_val_tokens(args.data_path, max(seq_std, seq_sw), args.max_val_tokens)
        luts = build_luts(args.tokenizer, C.get(cfg, "VOCAB_SIZE"))
        print(f"val_tokens:{val.numel() - 1} seq_len:{seq_std}/{seq_sw} mode:{mode} device:{args.device}")
        if not args.no_standard:
            bs = args.batch_seqs or max(C.get(cfg, "VAL_BATCH_SIZE") // 8 // seq_std, 1)
            loss, bpb = eval_val(model, val, luts, seq_std, bs)
            print(f"val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
        if not args.no_sliding and 0 < stride < seq_sw:
            bs = args.batch_seqs or C.get(cfg, "EVAL_BATCH_SEQS")
            loss, bpb = eval_val_sliding(model, val, luts, seq_sw, stride, bs, args.ref_rounding)
            print(f"sliding val_loss:{loss:.8f} val_bpb:{bpb:.8f} stride:{stride}")
    return C.cli_run(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
