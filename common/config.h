// config.h: every setting of the three programs, in one table.
//
// Each option has the reference's environment variable name (NUM_LAYERS, MATRIX_LR, ...), a
// --long-flag, a default (the `seed` preset), and a help line. Precedence, lowest first:
//     defaults (seed preset) -> --preset record -> environment variables -> --flags
// `--help` prints the table, `--dry-run` prints the boxed config and the parameter count,
// `--version` the git commit the program was built from.
// Impossible settings stop the program with one clear line and exit status 2.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "utils.h"
#ifdef __CUDACC__
#include <cuda_runtime.h>  // config_resolve_device asks the driver whether a GPU is usable
#endif

// The commit the program was built from: the Makefile passes `git describe --always --dirty`
// (make rebuilds a program only when its sources change, so a later commit that touched none of
// them leaves the earlier stamp, which still names the same code). train_gpt logs it, bench.sh
// puts it in its table.
#ifndef BUILD_REV
#define BUILD_REV "unknown (not built by the Makefile)"
#endif

// Which program shows an option in --help (an option may belong to several). P_MODEL marks the
// options that define the model's shape and forward pass: checkpoints carry them and a
// checkpoint's values override the configured ones (config_from_checkpoint, model_option).
enum { P_TRAIN = 1, P_QUANT = 2, P_EVAL = 4, P_ALL = 7, P_MODEL = 8 };

// X(type, field, ENV_NAME, "flag-name", "default", programs, "help")
// type: INT (long), FLT (double), STR (std::string), BOOL (0/1).
// The defaults are the reference script's, with the `seed` preset's architecture.
#define CONFIG_OPTIONS(X) \
    /* data and run */ \
    X(STR,  data_path,        "DATA_PATH",        "data-path",        "./data/datasets/fineweb10B_sp1024", P_ALL,   "directory holding fineweb_train_*.bin and fineweb_val_*.bin") \
    X(STR,  tokenizer_path,   "TOKENIZER_PATH",   "tokenizer-path",   "./data/tokenizers/fineweb_1024_bpe.model", P_ALL, "SentencePiece .model used for bits-per-byte") \
    X(STR,  run_id,           "RUN_ID",           "run-id",           "",        P_ALL,   "name of the log file logs/<RUN_ID>.txt (default: a random id)") \
    X(STR,  out_dir,          "OUT_DIR",          "out-dir",          ".",       P_TRAIN, "where final_model.ckpt and final_model.ptz are written") \
    X(STR,  device,           "DEVICE",           "device",           "auto",    P_ALL,   "auto (the GPU when one is usable, else the CPU), cuda or cpu (the CPU path is the reference, for tiny configs)") \
    X(STR,  init_ckpt,        "INIT_CKPT",        "init-ckpt",        "",        P_TRAIN, "start from these weights (a .ckpt) instead of the seeded init") \
    X(INT,  save_every,       "SAVE_EVERY",       "save-every",       "0",       P_TRAIN, "write the full training state to OUT_DIR/train_state.ckpt every N steps and at the end (0 = never)") \
    X(INT,  stop_step,        "STOP_STEP",        "stop-step",        "0",       P_TRAIN, "stop after this step as if interrupted: save the training state, skip the finale (0 = off)") \
    X(STR,  resume,           "RESUME",           "resume",           "",        P_TRAIN, "continue from a train_state.ckpt written by --save-every") \
    X(BOOL, train_only,       "TRAIN_ONLY",       "train-only",       "0",       P_TRAIN, "no tokenizer, no val data, no evals: train, then write the checkpoint and artifact") \
    X(INT,  seed,             "SEED",             "seed",             "1337",    P_TRAIN | P_EVAL, "random seed for the init (eval --sample: for the sampling)") \
    /* model */ \
    X(INT,  vocab_size,       "VOCAB_SIZE",       "vocab-size",       "1024",    P_ALL | P_MODEL,   "vocabulary size (token ids must be below it)") \
    X(INT,  num_layers,       "NUM_LAYERS",       "num-layers",       "11",      P_ALL | P_MODEL,   "transformer blocks (first half encoder, rest decoder with U-Net skips)") \
    X(INT,  model_dim,        "MODEL_DIM",        "model-dim",        "512",     P_ALL | P_MODEL,   "model width") \
    X(INT,  num_heads,        "NUM_HEADS",        "num-heads",        "8",       P_ALL | P_MODEL,   "query heads") \
    X(INT,  num_kv_heads,     "NUM_KV_HEADS",     "num-kv-heads",     "4",       P_ALL | P_MODEL,   "key/value heads (GQA)") \
    X(FLT,  mlp_mult,         "MLP_MULT",         "mlp-mult",         "3.0",     P_ALL | P_MODEL,   "MLP hidden = int(MLP_MULT * MODEL_DIM), relu^2") \
    X(INT,  bigram_vocab_size,"BIGRAM_VOCAB_SIZE","bigram-vocab-size","10240",   P_ALL | P_MODEL,   "BigramHash buckets (seed 10240, record 2048)") \
    X(INT,  bigram_dim,       "BIGRAM_DIM",       "bigram-dim",       "128",     P_ALL | P_MODEL,   "BigramHash embedding width (projected to MODEL_DIM)") \
    X(INT,  xsa_last_n,       "XSA_LAST_N",       "xsa-last-n",       "4",       P_ALL | P_MODEL,   "XSA on the last N layers (0 = off)") \
    X(INT,  rope_dims,        "ROPE_DIMS",        "rope-dims",        "16",      P_ALL | P_MODEL,   "partial RoPE: rotate the first ROPE_DIMS of each head (0 = all)") \
    X(FLT,  rope_base,        "ROPE_BASE",        "rope-base",        "10000",   P_ALL | P_MODEL,   "RoPE base (NTK-scaled for sequences longer than 1024)") \
    X(BOOL, ln_scale,         "LN_SCALE",         "ln-scale",         "1",       P_ALL | P_MODEL,   "scale block l's normed inputs by 1/sqrt(l+1)") \
    X(BOOL, ve_enabled,       "VE_ENABLED",       "ve-enabled",       "0",       P_ALL | P_MODEL,   "value embeddings (seed 0, record 1)") \
    X(INT,  ve_dim,           "VE_DIM",           "ve-dim",           "128",     P_ALL | P_MODEL,   "value embedding width") \
    X(STR,  ve_layers,        "VE_LAYERS",        "ve-layers",        "9,10",    P_ALL | P_MODEL,   "comma-separated layers that get value embeddings") \
    X(FLT,  qk_gain_init,     "QK_GAIN_INIT",     "qk-gain-init",     "1.5",     P_TRAIN, "initial per-head query gain") \
    X(FLT,  logit_softcap,    "LOGIT_SOFTCAP",    "logit-softcap",    "30",      P_ALL | P_MODEL,   "logits = c * tanh(logits / c)") \
    X(FLT,  tied_embed_init_std,"TIED_EMBED_INIT_STD","tied-embed-init-std","0.005", P_TRAIN, "std of the tied embedding init") \
    /* training */ \
    X(INT,  iterations,       "ITERATIONS",       "iterations",       "20000",   P_TRAIN, "training steps (the wallclock cap usually stops earlier)") \
    X(INT,  warmdown_iters,   "WARMDOWN_ITERS",   "warmdown-iters",   "3500",    P_TRAIN, "LR warmdown length in steps (wallclock-aware when capped)") \
    X(INT,  warmup_steps,     "WARMUP_STEPS",     "warmup-steps",     "20",      P_TRAIN, "steps run then undone before the clock starts (compile/caches)") \
    X(INT,  train_batch_tokens,"TRAIN_BATCH_TOKENS","train-batch-tokens","786432", P_TRAIN, "tokens per optimizer step, all ranks and micro-steps") \
    X(INT,  train_seq_len,    "TRAIN_SEQ_LEN",    "train-seq-len",    "2048",    P_TRAIN, "training sequence length") \
    X(FLT,  max_wallclock_seconds,"MAX_WALLCLOCK_SECONDS","max-wallclock-seconds","600", P_TRAIN, "training time cap in seconds, eval excluded (0 = none)") \
    X(FLT,  matrix_lr,        "MATRIX_LR",        "matrix-lr",        "0.025",   P_TRAIN, "Muon learning rate (block matrices, bigram/VE projections)") \
    X(FLT,  scalar_lr,        "SCALAR_LR",        "scalar-lr",        "0.025",   P_TRAIN, "AdamW learning rate for scalars and control tensors") \
    X(FLT,  tied_embed_lr,    "TIED_EMBED_LR",    "tied-embed-lr",    "0.035",   P_TRAIN, "AdamW learning rate for the embedding tables") \
    X(FLT,  muon_momentum,    "MUON_MOMENTUM",    "muon-momentum",    "0.99",    P_TRAIN, "Muon momentum after the warmup") \
    X(FLT,  muon_momentum_warmup_start,"MUON_MOMENTUM_WARMUP_START","muon-momentum-warmup-start","0.92", P_TRAIN, "Muon momentum at step 0") \
    X(INT,  muon_momentum_warmup_steps,"MUON_MOMENTUM_WARMUP_STEPS","muon-momentum-warmup-steps","1500", P_TRAIN, "steps of the linear momentum ramp") \
    X(INT,  muon_backend_steps,"MUON_BACKEND_STEPS","muon-backend-steps","5",     P_TRAIN, "Newton-Schulz iterations") \
    X(FLT,  muon_wd,          "MUON_WD",          "muon-wd",          "0.04",    P_TRAIN, "Muon decoupled weight decay") \
    X(FLT,  adam_wd,          "ADAM_WD",          "adam-wd",          "0.04",    P_TRAIN, "AdamW weight decay") \
    X(FLT,  beta1,            "BETA1",            "beta1",            "0.9",     P_TRAIN, "AdamW beta1") \
    X(FLT,  beta2,            "BETA2",            "beta2",            "0.95",    P_TRAIN, "AdamW beta2") \
    X(FLT,  adam_eps,         "ADAM_EPS",         "adam-eps",         "1e-8",    P_TRAIN, "AdamW epsilon") \
    X(FLT,  grad_clip_norm,   "GRAD_CLIP_NORM",   "grad-clip-norm",   "0.3",     P_TRAIN, "clip the global gradient norm to this (0 = off)") \
    X(FLT,  ema_decay,        "EMA_DECAY",        "ema-decay",        "0.997",   P_TRAIN, "EMA of the weights, updated after every step") \
    X(BOOL, ema_warmup,       "EMA_WARMUP",       "ema-warmup",       "0",       P_TRAIN, "ramp the EMA decay: min(EMA_DECAY, (1+t)/(10+t)) at step t, for short runs (ours; off = the reference)") \
    X(FLT,  late_qat_threshold,"LATE_QAT_THRESHOLD","late-qat-threshold","0.15", P_TRAIN, "fake-quantize linear weights once the LR multiplier drops below this (0 = off)") \
    X(INT,  train_log_every,  "TRAIN_LOG_EVERY",  "train-log-every",  "500",     P_TRAIN, "log a step line every N steps (and the first 10)") \
    X(FLT,  train_log_seconds,"TRAIN_LOG_SECONDS","train-log-seconds","30",      P_TRAIN, "also log a step line when this many seconds passed since the last one (0 = off; ours)") \
    X(BOOL, profile,          "PROFILE",          "profile",          "0",       P_TRAIN, "GPU only: time every other step after the warmup by kernel family, print the breakdown at the end (ours; dev/bench.sh)") \
    /* several GPUs or CPU ranks (common/dist.h) */ \
    X(INT,  nproc,            "NPROC",            "nproc",            "0",       P_TRAIN, "ranks to start on this node (0 = one per visible GPU, 1 on --device cpu); must divide 8") \
    X(FLT,  dist_timeout,     "DIST_TIMEOUT",     "dist-timeout",     "300",     P_TRAIN, "seconds any rank waits for another (rendezvous, collectives) before giving up") \
    X(INT,  check_sync_every, "CHECK_SYNC_EVERY", "check-sync-every", "0",       P_TRAIN, "debug: every N steps, check that all ranks hold bit-identical weights (0 = off)") \
    X(BOOL, dist_selftest,    "",                 "dist-selftest",    "0",       P_TRAIN, "test the launcher, rendezvous and data slices: every rank writes OUT_DIR/dist_rank<R>.txt, no training") \
    /* evaluation */ \
    X(INT,  val_loss_every,   "VAL_LOSS_EVERY",   "val-loss-every",   "4000",    P_TRAIN, "validate every N steps (0 = only at the end)") \
    X(INT,  val_batch_size,   "VAL_BATCH_SIZE",   "val-batch-size",   "524288",  P_ALL,   "tokens per validation batch, all ranks") \
    X(INT,  eval_seq_len,     "EVAL_SEQ_LEN",     "eval-seq-len",     "2048",    P_ALL,   "sequence length of the final evals") \
    X(INT,  eval_stride,      "EVAL_STRIDE",      "eval-stride",      "64",      P_ALL,   "sliding-window eval stride (0 = skip the sliding eval)") \
    X(INT,  val_max_tokens,   "VAL_MAX_TOKENS",   "val-max-tokens",   "0",       P_ALL,   "score only the first N val tokens (0 = all; ours, for quick CPU runs)") \
    X(INT,  eval_batch_seqs,  "EVAL_BATCH_SEQS",  "eval-batch-seqs",  "32",      P_ALL,   "windows per batch in the sliding eval") \
    X(BOOL, eval_ref_rounding,"EVAL_REF_ROUNDING","eval-ref-rounding","0",       P_ALL,   "evals round the softcapped logits like the record script: to bf16 in the sliding eval, not in the standard one (ours; docs/RESULTS.md)") \
    /* export */ \
    X(INT,  zstd_level,       "ZSTD_LEVEL",       "zstd-level",       "22",      P_TRAIN | P_QUANT, "artifact compression level, 1..22 (the submission is measured at 22)") \
    X(STR,  source_dir,       "SOURCE_DIR",       "source-dir",       "",        P_TRAIN | P_QUANT, "repository root whose train_gpt.cu sources count as code bytes (default: next to the binary)") \
    X(BOOL, quant_pct_per_row,"QUANT_PCT_PER_ROW","quant-pct-per-row","0",       P_TRAIN | P_QUANT, "GPTQ-lite picks the clip percentile per row, not per tensor (ours; off = the reference)") \
    X(INT,  mlp_quant_bits,   "MLP_QUANT_BITS",   "mlp-quant-bits",   "5",       P_ALL | P_MODEL,   "MLP weights: 5 = int5 row-max (seed), 6 = int6 GPTQ-lite (record)") \
    /* program inputs and outputs: flags only (no environment variable: OUT and friends are too \
       common as variable names to read from the environment) */ \
    X(STR,  checkpoint,       "",       "checkpoint",       "",        P_QUANT | P_EVAL, "model checkpoint (.ckpt) to read") \
    X(STR,  artifact,         "",         "artifact",         "",        P_EVAL,  "compressed artifact (.ptz) to score") \
    X(STR,  out,              "",              "out",              "",        P_QUANT, "output file") \
    X(BOOL, dequantize,       "",       "dequantize",       "0",       P_QUANT, "write the round-tripped weights as a checkpoint") \
    X(BOOL, dump_tokenizer,   "",                 "dump-tokenizer",   "0",       P_EVAL,  "print the tokenizer table (id, type, bytes, space, boundary, piece) and exit") \
    X(STR,  sample,           "",                 "sample",           "",        P_EVAL,  "generate text after this prompt instead of scoring (see --max-new-tokens, --temperature, --top-k, --seed)") \
    X(INT,  max_new_tokens,   "",                 "max-new-tokens",   "128",     P_EVAL,  "--sample: generate at most this many tokens (stops early at a document boundary)") \
    X(FLT,  temperature,      "",                 "temperature",      "0.8",     P_EVAL,  "--sample: softmax temperature (0 = always the most likely token)") \
    X(INT,  top_k,            "",                 "top-k",            "40",      P_EVAL,  "--sample: draw from the k most likely tokens only (0 = all)") \
    X(BOOL, dry_run,          "",                 "dry-run",          "0",       P_ALL,   "print the configuration and parameter count, then exit")

// The presets: named lists of overrides on top of the defaults (which are `seed`).
struct PresetRow { const char *preset, *env, *value; };
static const PresetRow PRESETS[] = {
    {"seed", "BIGRAM_VOCAB_SIZE", "10240"}, {"seed", "VE_ENABLED", "0"}, {"seed", "MLP_QUANT_BITS", "5"},
    {"record", "BIGRAM_VOCAB_SIZE", "2048"}, {"record", "VE_ENABLED", "1"}, {"record", "MLP_QUANT_BITS", "6"},
};

struct Config {
#define INT_T long
#define FLT_T double
#define STR_T std::string
#define BOOL_T int
#define X(type, field, env, flag, def, progs, help) type##_T field;
    CONFIG_OPTIONS(X)
#undef X
    std::string preset = "seed";
    // derived (config_derive fills these)
    int head_dim = 0, kv_dim = 0, mlp_hidden = 0, num_encoder = 0, num_decoder = 0, num_skip = 0;
    int rope_dims_eff = 0;             // ROPE_DIMS, or head_dim when 0
    std::vector<int> ve_layer_list;    // parsed VE_LAYERS when VE is enabled, else empty
    // where each option's value came from: "default", "preset", "env", "flag", "file"
    std::vector<std::string> source;
};

enum OptType { INT, FLT, STR, BOOL };
struct OptionInfo {
    OptType type;
    const char *field, *env, *flag, *def;
    int programs;
    const char *help;
};
static const OptionInfo OPTIONS[] = {
#define X(type, field, env, flag, def, progs, help) {type, #field, env, flag, def, progs, help},
    CONFIG_OPTIONS(X)
#undef X
};
static const int NUM_OPTIONS = (int)(sizeof(OPTIONS) / sizeof(OPTIONS[0]));

// Pointer to option i's field in a Config (the X-macro order is the OPTIONS order).
inline void *config_field(Config &c, int i) {
    int k = 0;
#define X(type, field, env, flag, def, progs, help) if (k++ == i) return &c.field;
    CONFIG_OPTIONS(X)
#undef X
    return nullptr;
}

inline int option_index_by_env(const char *env) {
    for (int i = 0; i < NUM_OPTIONS; i++) if (OPTIONS[i].env[0] && strcmp(OPTIONS[i].env, env) == 0) return i;
    return -1;
}
inline int option_index_by_flag(const char *flag) {
    for (int i = 0; i < NUM_OPTIONS; i++) if (strcmp(OPTIONS[i].flag, flag) == 0) return i;
    return -1;
}

// Parse `text` into option i. `origin` says where the text came from (for the error message).
inline void config_set(Config &c, int i, const char *text, const char *origin) {
    const OptionInfo &o = OPTIONS[i];
    const char *name = o.env[0] ? o.env : o.flag;
    void *f = config_field(c, i);
    char *end = nullptr;
    errno = 0;
    switch (o.type) {
    case INT: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno == ERANGE)
            fatal_config("%s=%s (%s): not an integer", name, text, origin);
        *(long *)f = v;
        break;
    }
    case FLT: {
        double v = strtod(text, &end);
        if (end == text || *end != '\0' || errno == ERANGE || !std::isfinite(v))
            fatal_config("%s=%s (%s): not a finite number", name, text, origin);
        *(double *)f = v;
        break;
    }
    case BOOL:
        if (!strcmp(text, "1") || !strcmp(text, "true")) *(int *)f = 1;
        else if (!strcmp(text, "0") || !strcmp(text, "false")) *(int *)f = 0;
        else fatal_config("%s=%s (%s): expected 0 or 1", name, text, origin);
        break;
    case STR: *(std::string *)f = text; break;
    }
    c.source[i] = origin;
}

// The value of option i as text (what --dry-run and checkpoints show).
inline std::string config_get(const Config &c, int i) {
    const void *f = config_field(const_cast<Config &>(c), i);
    char buf[64];
    switch (OPTIONS[i].type) {
    case INT: snprintf(buf, sizeof buf, "%ld", *(const long *)f); return buf;
    case FLT: snprintf(buf, sizeof buf, "%.17g", *(const double *)f); return buf;
    case BOOL: return *(const int *)f ? "1" : "0";
    case STR: return *(const std::string *)f;
    }
    return "";
}
// Shortest text that reads back to the same double, for the printed table.
inline std::string config_get_short(const Config &c, int i) {
    if (OPTIONS[i].type != FLT) return config_get(c, i);
    double v = *(const double *)config_field(const_cast<Config &>(c), i);
    char buf[64];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, nullptr) == v) break;
    }
    return buf;
}

inline void config_defaults(Config &c) {
    c.source.assign(NUM_OPTIONS, "default");
    for (int i = 0; i < NUM_OPTIONS; i++) config_set(c, i, OPTIONS[i].def, "default");
}

inline void config_apply_preset(Config &c, const std::string &name) {
    bool found = false;
    for (const PresetRow &r : PRESETS) {
        if (name != r.preset) continue;
        found = true;
        config_set(c, option_index_by_env(r.env), r.value, "preset");
    }
    if (!found) fatal_config("--preset %s: unknown preset (known: seed, record)", name.c_str());
    c.preset = name;
}

// Where the config being checked came from, for error messages ("" = command line / env).
inline std::string &config_error_origin() { static std::string s; return s; }
[[noreturn]] inline void config_fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const std::string &o = config_error_origin();
    if (o.empty()) fatal_config("%s", msg);
    fatal_config("%s: config %s", o.c_str(), msg);
}

// Derived sizes and the impossible-settings checks. Every failure is one line, exit status 2.
inline void config_derive(Config &c) {
    auto positive = [&](long v, const char *env) { if (v <= 0) config_fail("%s=%ld: must be positive", env, v); };
    auto nonneg = [&](double v, const char *env) { if (v < 0) config_fail("%s=%g: must be >= 0", env, v); };
    positive(c.vocab_size, "VOCAB_SIZE");
    if (c.vocab_size > 65536) config_fail("VOCAB_SIZE=%ld: shards store uint16 token ids, so at most 65536", c.vocab_size);
    positive(c.num_layers, "NUM_LAYERS");
    positive(c.model_dim, "MODEL_DIM");
    positive(c.num_heads, "NUM_HEADS");
    positive(c.num_kv_heads, "NUM_KV_HEADS");
    positive(c.bigram_dim, "BIGRAM_DIM");
    positive(c.ve_dim, "VE_DIM");
    positive(c.iterations, "ITERATIONS");
    positive(c.train_batch_tokens, "TRAIN_BATCH_TOKENS");
    positive(c.train_seq_len, "TRAIN_SEQ_LEN");
    positive(c.eval_seq_len, "EVAL_SEQ_LEN");
    positive(c.val_batch_size, "VAL_BATCH_SIZE");
    positive(c.eval_batch_seqs, "EVAL_BATCH_SEQS");
    positive(c.muon_backend_steps, "MUON_BACKEND_STEPS");
    nonneg(c.warmdown_iters, "WARMDOWN_ITERS");
    nonneg(c.warmup_steps, "WARMUP_STEPS");
    nonneg(c.val_loss_every, "VAL_LOSS_EVERY");
    nonneg(c.train_log_every, "TRAIN_LOG_EVERY");
    if (!(c.train_log_seconds >= 0)) config_fail("TRAIN_LOG_SECONDS=%g: must be 0 (off) or positive", c.train_log_seconds);
    nonneg(c.eval_stride, "EVAL_STRIDE");
    nonneg(c.val_max_tokens, "VAL_MAX_TOKENS");
    nonneg(c.save_every, "SAVE_EVERY");
    nonneg(c.stop_step, "STOP_STEP");
    nonneg(c.xsa_last_n, "XSA_LAST_N");
    nonneg(c.max_wallclock_seconds, "MAX_WALLCLOCK_SECONDS");
    nonneg(c.grad_clip_norm, "GRAD_CLIP_NORM");
    nonneg(c.muon_momentum_warmup_steps, "MUON_MOMENTUM_WARMUP_STEPS");
    nonneg(c.matrix_lr, "MATRIX_LR");
    nonneg(c.scalar_lr, "SCALAR_LR");
    nonneg(c.tied_embed_lr, "TIED_EMBED_LR");
    nonneg(c.muon_wd, "MUON_WD");
    nonneg(c.adam_wd, "ADAM_WD");
    nonneg(c.late_qat_threshold, "LATE_QAT_THRESHOLD");
    nonneg(c.tied_embed_init_std, "TIED_EMBED_INIT_STD");
    if (c.logit_softcap <= 0) config_fail("LOGIT_SOFTCAP=%g: must be positive", c.logit_softcap);
    if (c.rope_base <= 0) config_fail("ROPE_BASE=%g: must be positive", c.rope_base);
    if (c.adam_eps <= 0) config_fail("ADAM_EPS=%g: must be positive", c.adam_eps);
    if (c.beta1 < 0 || c.beta1 >= 1) config_fail("BETA1=%g: must be in [0, 1)", c.beta1);
    if (c.beta2 < 0 || c.beta2 >= 1) config_fail("BETA2=%g: must be in [0, 1)", c.beta2);
    if (c.ema_decay < 0 || c.ema_decay > 1) config_fail("EMA_DECAY=%g: must be in [0, 1]", c.ema_decay);
    if (c.max_new_tokens < 0) config_fail("--max-new-tokens %ld: must be >= 0", c.max_new_tokens);
    if (c.temperature < 0) config_fail("--temperature %g: must be >= 0", c.temperature);
    if (c.top_k < 0) config_fail("--top-k %ld: must be >= 0", c.top_k);
    if (c.muon_momentum < 0 || c.muon_momentum >= 1) config_fail("MUON_MOMENTUM=%g: must be in [0, 1)", c.muon_momentum);
    if (c.muon_momentum_warmup_start < 0 || c.muon_momentum_warmup_start >= 1)
        config_fail("MUON_MOMENTUM_WARMUP_START=%g: must be in [0, 1)", c.muon_momentum_warmup_start);
    if (c.model_dim % c.num_heads != 0)
        config_fail("NUM_HEADS=%ld does not divide MODEL_DIM=%ld", c.num_heads, c.model_dim);
    if (c.num_heads % c.num_kv_heads != 0)
        config_fail("NUM_KV_HEADS=%ld does not divide NUM_HEADS=%ld", c.num_kv_heads, c.num_heads);
    c.head_dim = (int)(c.model_dim / c.num_heads);
    if (c.head_dim % 2 != 0)
        config_fail("head dim MODEL_DIM/NUM_HEADS=%d is odd; RoPE needs an even head dim", c.head_dim);
    c.kv_dim = (int)c.num_kv_heads * c.head_dim;
    c.rope_dims_eff = c.rope_dims == 0 ? c.head_dim : (int)c.rope_dims;
    if (c.rope_dims < 0 || c.rope_dims_eff % 2 != 0 || c.rope_dims_eff < 4 || c.rope_dims_eff > c.head_dim)
        config_fail("ROPE_DIMS=%ld: must be 0 (whole head) or even, in [4, head dim %d]", c.rope_dims, c.head_dim);
    if (!(c.mlp_mult > 0)) config_fail("MLP_MULT=%g: must be positive", c.mlp_mult);
    c.mlp_hidden = (int)(c.mlp_mult * (double)c.model_dim); // int() truncation, as the reference
    if (c.mlp_hidden <= 0) config_fail("MLP_MULT=%g gives an MLP hidden size of 0", c.mlp_mult);
    if (c.bigram_vocab_size < 2) config_fail("BIGRAM_VOCAB_SIZE=%ld: must be at least 2 (hash mod B-1)", c.bigram_vocab_size);
    if (c.bigram_dim == c.model_dim)
        config_fail("BIGRAM_DIM=%ld equals MODEL_DIM: the reference then drops bigram.proj, a variant not supported here "
                    "(HINT: set BIGRAM_DIM to another width, e.g. --bigram-dim 64)", c.bigram_dim);
    // XSA_LAST_N > NUM_LAYERS just means every layer, as in the reference (max(0, L - n)).
    if (c.zstd_level < 1 || c.zstd_level > 22) config_fail("ZSTD_LEVEL=%ld: must be in 1..22", c.zstd_level);
    if (c.mlp_quant_bits != 5 && c.mlp_quant_bits != 6) config_fail("MLP_QUANT_BITS=%ld: must be 5 or 6", c.mlp_quant_bits);
    if (c.device != "auto" && c.device != "cuda" && c.device != "cpu") config_fail("DEVICE=%s: must be auto, cuda or cpu", c.device.c_str());
    c.num_encoder = (int)c.num_layers / 2;
    c.num_decoder = (int)c.num_layers - c.num_encoder;
    c.num_skip = std::min(c.num_encoder, c.num_decoder);
    c.ve_layer_list.clear();
    if (c.ve_enabled) {
        if (c.ve_dim == c.kv_dim)
            config_fail("VE_DIM=%ld equals the KV width: the reference then drops ve_shared.proj, a variant not supported here "
                        "(HINT: set VE_DIM to another width)", c.ve_dim);
        const char *s = c.ve_layers.c_str();
        while (*s) {
            char *end;
            errno = 0;
            long l = strtol(s, &end, 10);
            if (end == s || errno) config_fail("VE_LAYERS=%s: expected comma-separated layer numbers", c.ve_layers.c_str());
            if (l < 0 || l >= c.num_layers)
                config_fail("VE_LAYERS=%s: layer %ld out of range [0, %ld)", c.ve_layers.c_str(), l, c.num_layers);
            for (int k : c.ve_layer_list)
                if (k == l) config_fail("VE_LAYERS=%s: layer %ld listed twice", c.ve_layers.c_str(), l);
            c.ve_layer_list.push_back((int)l);
            s = end;
            while (*s == ' ') s++;
            if (*s == ',') s++;
            else if (*s) config_fail("VE_LAYERS=%s: expected comma-separated layer numbers", c.ve_layers.c_str());
        }
        if (c.ve_layer_list.empty()) config_fail("VE_ENABLED=1 but VE_LAYERS is empty");
    }
}

// The reference's gradient accumulation: 8 micro-steps per optimizer step on one GPU, 8 /
// world_size on more (the global batch stays TRAIN_BATCH_TOKENS). model.h's batch_geometry.
constexpr int REF_GRAD_ACCUM = 8;

// Checks that depend on the number of ranks (grad accumulation = REF_GRAD_ACCUM / world_size).
inline void config_check_batch(const Config &c, int world_size) {
    if (world_size <= 0 || REF_GRAD_ACCUM % world_size != 0)
        config_fail("WORLD_SIZE=%d must divide %d so the gradient accumulation stays integral", world_size, REF_GRAD_ACCUM);
    long accum = REF_GRAD_ACCUM / world_size;
    long local = c.train_batch_tokens / (world_size * accum);
    if (local <= 0 || c.train_batch_tokens % (world_size * accum) != 0 || local % c.train_seq_len != 0)
        config_fail("TRAIN_BATCH_TOKENS=%ld must split into %d ranks x %ld micro-steps of whole TRAIN_SEQ_LEN=%ld sequences",
                     c.train_batch_tokens, world_size, accum, c.train_seq_len);
    long val_local = c.val_batch_size / (world_size * accum);
    if (val_local < c.train_seq_len)
        config_fail("VAL_BATCH_SIZE=%ld must give each of %d ranks x %ld micro-steps at least one sequence of %ld tokens",
                     c.val_batch_size, world_size, accum, c.train_seq_len);
}

inline void config_print_help(const char *prog, int program, const char *usage) {
    printf("usage: %s %s\n\n", prog, usage);
    printf("Every option can be set as --flag VALUE (or --flag=VALUE) or by its environment variable.\n");
    printf("Precedence: --flag > environment > --preset > defaults (the seed preset).\n\n");
    printf("  %-34s %-28s %-14s %s\n", "--flag", "ENV", "default", "meaning");
    printf("  %-34s %-28s %-14s %s\n", "--preset NAME", "", "seed", "seed (the default) or record (docs/RECIPE.md, Presets)");
    printf("  %-34s %-28s %-14s %s\n", "--help", "", "", "print this table and exit");
    printf("  %-34s %-28s %-14s %s\n", "--version", "", "", "print the git commit this program was built from and exit");
    for (int i = 0; i < NUM_OPTIONS; i++) {
        const OptionInfo &o = OPTIONS[i];
        if (!(o.programs & program)) continue;
        std::string flag = std::string("--") + o.flag + (o.type == BOOL && !o.env[0] ? "" : " V");
        std::string def = o.def;
        if (def.size() > 14) def = "(see below)";
        printf("  %-34s %-28s %-14s %s\n", flag.c_str(), o.env, def.c_str(), o.help);
    }
    printf("\nLong defaults: DATA_PATH=%s TOKENIZER_PATH=%s\n", OPTIONS[option_index_by_env("DATA_PATH")].def,
           OPTIONS[option_index_by_env("TOKENIZER_PATH")].def);
}

// Fill `c` from defaults, --preset, the environment and the command line. Returns normally
// with the config validated; --help prints and exits 0; bad input exits 2.
inline void config_parse(Config &c, int argc, char **argv, int program, const char *usage) {
    // --help and --preset first: the preset sits below the environment in precedence.
    std::string preset = "seed";
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) { config_print_help(argv[0], program, usage); exit(0); }
        if (!strcmp(argv[a], "--version")) {
            const char *slash = strrchr(argv[0], '/');
            printf("%s %s\n", slash ? slash + 1 : argv[0], BUILD_REV);
            exit(0);
        }
        if (!strcmp(argv[a], "--preset")) {
            if (a + 1 >= argc) config_fail("--preset needs a value (seed or record)");
            preset = argv[a + 1];
        } else if (!strncmp(argv[a], "--preset=", 9)) preset = argv[a] + 9;
    }
    const char *env_preset = getenv("PRESET");
    bool flag_preset = false;
    for (int a = 1; a < argc; a++) if (!strncmp(argv[a], "--preset", 8)) flag_preset = true;
    if (!flag_preset && env_preset && *env_preset) preset = env_preset;
    config_defaults(c);
    config_apply_preset(c, preset);
    // environment
    for (int i = 0; i < NUM_OPTIONS; i++) {
        if (!OPTIONS[i].env[0]) continue;
        const char *v = getenv(OPTIONS[i].env);
        if (v != nullptr) config_set(c, i, v, "env");
    }
    // flags
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0) config_fail("unexpected argument '%s' (options are --long-flags; see --help)", arg);
        std::string name = arg + 2, value;
        bool has_value = false;
        size_t eq = name.find('=');
        if (eq != std::string::npos) { value = name.substr(eq + 1); name = name.substr(0, eq); has_value = true; }
        if (name == "preset") { if (!has_value) a++; continue; }
        int i = option_index_by_flag(name.c_str());
        if (i < 0 || !(OPTIONS[i].programs & program)) config_fail("unknown option --%s (see --help)", name.c_str());
        if (!has_value) {
            // boolean flags without an env name are switches (--dry-run); the others take a value
            if (OPTIONS[i].type == BOOL && !OPTIONS[i].env[0]) value = "1";
            else if (OPTIONS[i].type == BOOL && (a + 1 >= argc || strncmp(argv[a + 1], "--", 2) == 0)) value = "1";
            else {
                if (a + 1 >= argc) config_fail("--%s needs a value", name.c_str());
                value = argv[++a];
            }
        }
        config_set(c, i, value.c_str(), "flag");
    }
    if (c.run_id.empty()) {
        // a random id like the reference's uuid4, from /dev/urandom (does not touch the model seed)
        unsigned char r[16] = {0};
        FILE *fp = fopen("/dev/urandom", "rb");
        if (fp) { if (fread(r, 1, 16, fp) != 16) memset(r, 0, 16); fclose(fp); }
        char buf[40];
        snprintf(buf, sizeof buf, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
                 r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
        c.run_id = buf;
    }
    config_derive(c);
}

// The boxed table: option, value, where the value came from.
template <typename Print>
void config_print_table(const Config &c, int program, Print print) {
    const char *line = "+------------------------------+------------------------------------------+---------+\n";
    print(line);
    print("| %-28s | %-40s | %-7s |\n", "option", "value", "from");
    print(line);
    print("| %-28s | %-40s | %-7s |\n", "preset", c.preset.c_str(), "");
    for (int i = 0; i < NUM_OPTIONS; i++) {
        const OptionInfo &o = OPTIONS[i];
        if (!(o.programs & program) || !o.env[0]) continue;
        std::string v = config_get_short(c, i);
        if (v.size() > 40) v = "..." + v.substr(v.size() - 37);
        print("| %-28s | %-40s | %-7s |\n", o.env, v.c_str(), c.source[i].c_str());
    }
    print(line);
}

// --device auto|cuda|cpu, resolved before anything is built: auto takes the GPU when one is
// usable and else the CPU; an explicit cuda without a usable GPU is an error saying why. Builds
// without CUDA (g++, or nvcc absent at build time) have no GPU. Returns a notice line when auto
// fell back to the CPU ("" otherwise); leaves c.device at "cuda" or "cpu".
inline std::string config_resolve_device(Config &c, const char *prog) {
    if (c.device == "cpu") return "";
    std::string why;
#ifdef __CUDACC__
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    size_t free_b = 0, total_b = 0;
    if (e == cudaSuccess && n > 0) e = cudaMemGetInfo(&free_b, &total_b);  // creates the context: the real test
    if (e != cudaSuccess) why = cudaGetErrorString(e);
    else if (n == 0) why = "no CUDA device";
    (void)cudaGetLastError();  // clear the sticky error of a failed probe
#else
    why = "this build has no CUDA (nvcc was not found when it was built)";
#endif
    if (why.empty()) {
        c.device = "cuda";
        return "";
    }
    if (c.device == "cuda")
        fatal_config("--device cuda: no usable GPU here (%s). HINT: --device cpu runs the CPU reference (tiny configs, see "
                     "README.md), or --device auto picks whatever is there", why.c_str());
    c.device = "cpu";
    return std::string(prog) + ": no usable GPU (" + why + "), running on the CPU (--device auto)";
}
