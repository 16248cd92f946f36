"""config.py: the one table of settings of the Python reference, keyed by the reference's
environment-variable names (the same keys our .ckpt files carry as text).

Defaults are the reference script's own (train_gpt.py of the 1.1233 record), which are the
`record` preset. The project's default preset is `seed`, which differs in three keys:

    seed:   BIGRAM_VOCAB_SIZE=10240  VE_ENABLED=0  MLP_QUANT_BITS=5   (27,878,489 parameters)
    record: BIGRAM_VOCAB_SIZE=2048   VE_ENABLED=1  MLP_QUANT_BITS=6   (26,993,756 parameters)

A config is a plain dict str -> str (as in a .ckpt); `get(cfg, KEY)` returns the typed value,
falling back to the table's default.
"""

import sys

# name, default (text, as an env var would hold it), type, help
OPTIONS = [
    # --- model ---------------------------------------------------------------------------
    ("VOCAB_SIZE", "1024", int, "tokenizer vocabulary size"),
    ("NUM_LAYERS", "11", int, "transformer blocks"),
    ("MODEL_DIM", "512", int, "residual width D"),
    ("NUM_HEADS", "8", int, "query heads"),
    ("NUM_KV_HEADS", "4", int, "key/value heads (GQA: query head h reads kv head h // (H/KV))"),
    ("MLP_MULT", "3.0", float, "MLP hidden = int(MLP_MULT * D)"),
    ("TIE_EMBEDDINGS", "1", int, "head shares tok_emb (only 1 is supported)"),
    ("ROPE_BASE", "10000.0", float, "RoPE base (before the NTK change for T > 1024)"),
    ("ROPE_DIMS", "16", int, "rotated dims per head (0 = all)"),
    ("LOGIT_SOFTCAP", "30.0", float, "logits = cap * tanh(z / cap)"),
    ("QK_GAIN_INIT", "1.5", float, "initial q_gain"),
    ("TIED_EMBED_INIT_STD", "0.005", float, "tok_emb init std"),
    ("BIGRAM_VOCAB_SIZE", "2048", int, "BigramHash buckets (0 = no bigram module)"),
    ("BIGRAM_DIM", "128", int, "BigramHash embedding dim"),
    ("XSA_LAST_N", "4", int, "XSA on the last N layers"),
    ("LN_SCALE", "1", int, "scale block norms by 1/sqrt(layer+1)"),
    ("VE_ENABLED", "1", int, "shared value embedding on VE_LAYERS"),
    ("VE_DIM", "128", int, "value embedding dim"),
    ("VE_LAYERS", "9,10", str, "layers that add the value embedding"),
    ("MLP_QUANT_BITS", "6", int, "export bits of MLP matrices (ours: 5 = int5 row-max, 6 = GPTQ-lite)"),
    # --- training ------------------------------------------------------------------------
    ("SEED", "1337", int, "init seed"),
    ("ITERATIONS", "20000", int, "max steps"),
    ("WARMDOWN_ITERS", "3500", int, "warmdown length in iterations"),
    ("WARMUP_STEPS", "20", int, "compile warmup steps (state restored after: no effect here)"),
    ("TRAIN_BATCH_TOKENS", "786432", int, "tokens per optimizer step, all ranks"),
    ("TRAIN_SEQ_LEN", "2048", int, "training sequence length"),
    ("EVAL_SEQ_LEN", "2048", int, "evaluation sequence length"),
    ("MAX_WALLCLOCK_SECONDS", "600.0", float, "training time cap (0 = iteration schedule)"),
    ("TIED_EMBED_LR", "0.035", float, "AdamW lr of the embedding tables"),
    ("MATRIX_LR", "0.025", float, "Muon lr"),
    ("SCALAR_LR", "0.025", float, "AdamW lr of scalars and control tensors"),
    ("MUON_MOMENTUM", "0.99", float, "Muon momentum after warmup"),
    ("MUON_BACKEND_STEPS", "5", int, "Newton-Schulz iterations"),
    ("MUON_MOMENTUM_WARMUP_START", "0.92", float, "Muon momentum at step 0"),
    ("MUON_MOMENTUM_WARMUP_STEPS", "1500", int, "steps of the linear momentum ramp"),
    ("BETA1", "0.9", float, "AdamW beta1"),
    ("BETA2", "0.95", float, "AdamW beta2"),
    ("ADAM_EPS", "1e-08", float, "AdamW eps"),
    ("GRAD_CLIP_NORM", "0.3", float, "global grad-norm clip (0 = off)"),
    ("MUON_WD", "0.04", float, "Muon decoupled weight decay"),
    ("ADAM_WD", "0.04", float, "AdamW weight decay"),
    ("QAT_ENABLED", "0", int, "fake-quantize from step 0"),
    ("LATE_QAT_THRESHOLD", "0.15", float, "turn QAT on once lr_mul < this"),
    ("EMA_DECAY", "0.997", float, "EMA decay (hard-coded 0.997 in the reference)"),
    ("VAL_BATCH_SIZE", "524288", int, "tokens per eval batch, all ranks"),
    ("VAL_LOSS_EVERY", "4000", int, "val every N steps"),
    ("EVAL_STRIDE", "64", int, "sliding-window stride"),
    ("EVAL_BATCH_SEQS", "32", int, "windows per sliding-eval batch"),
]
DEFAULTS = {name: default for name, default, _, _ in OPTIONS}
TYPES = {name: typ for name, _, typ, _ in OPTIONS}
MODEL_KEYS = [name for name, *_ in OPTIONS[:[o[0] for o in OPTIONS].index("SEED")]]

PRESETS = {
    "record": {},
    "seed": {"BIGRAM_VOCAB_SIZE": "10240", "VE_ENABLED": "0", "MLP_QUANT_BITS": "5"},
}


def get(cfg, key):
    """Typed value of `key` in cfg (a str -> str dict), else the table default."""
    if key not in TYPES:
        raise KeyError(f"unknown config key {key}")
    text = cfg.get(key, DEFAULTS[key])
    typ = TYPES[key]
    try:
        return typ(text)
    except ValueError:
        raise ValueError(f"config {key}={text!r} is not a valid {typ.__name__}")


def full_config(preset="seed", overrides=None):
    """Every key of the table as text: defaults, then the preset, then overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    cfg = dict(DEFAULTS)
    cfg.update(PRESETS[preset])
    for k, v in (overrides or {}).items():
        if k not in TYPES:
            raise ValueError(f"unknown config key {k}")
        cfg[k] = str(v)
    return cfg


def parse_assignments(items):
    """['KEY=VALUE', ...] -> dict, with a clear error for a malformed or unknown one."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        if k not in TYPES:
            raise ValueError(f"--set {item!r}: unknown key {k}")
        out[k] = v
    return out


def ve_layers(cfg):
    """The layer indices that add the value embedding ([] when VE is off)."""
    if not get(cfg, "VE_ENABLED"):
        return []
    text = get(cfg, "VE_LAYERS")
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"config VE_LAYERS={text!r} is not a comma-separated list of layers")


def cli_run(body, code=1):
    """Run body(), the work of a command-line main(): a ValueError (bad input) becomes one line
    "error: ..." on stderr and the exit status `code`; otherwise body's status (None: 0)."""
    try:
        return body() or 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return code
