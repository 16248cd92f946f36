// model.h: the facts about the model that both twins (model_cpu.h, model_gpu.cuh) and their
// kernels share, so that neither model has to include the other.
//
//   RMS_EPS, XSA_NORM_EPS, ROPE_REF_LEN, BIGRAM_MUL_*   constants of the reference's ops
//   rope_tables_cpu                                    the RoPE cos/sin tables (both models use them)
//   layer_has_xsa, layer_ve_index                      which layers have XSA and value embeddings
//   visit_linear_weights                               the linear weights (QAT fake-quantizes them)
//   QatMode                                            which weights the forward uses
//   NllFn, logits_rounding                             a forward pass as the evaluator sees it
//   BatchGeometry                                      micro-steps and micro-batch shape of a step
//
// The parameter list itself (names, shapes, optimizer groups) is tensors.h; the hyperparameters
// are config.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "config.h"
#include "tensors.h"

// eps of every rmsnorm: float32 machine epsilon, what torch's F.rms_norm(eps=None) uses (docs/RECIPE.md, "The model")
constexpr double RMS_EPS = 1.1920928955078125e-07;
// F.normalize's eps (XSA): the norm is clamped to at least this
constexpr double XSA_NORM_EPS = 1e-12;
// the rotary module's reference length: longer sequences get an NTK-scaled base
constexpr int ROPE_REF_LEN = 1024;
// BigramHash multipliers
constexpr int32_t BIGRAM_MUL_CUR = 36313, BIGRAM_MUL_PREV = 27191;

// ----------------------------------------------------------------------------
// RoPE tables

// RoPE tables cos/sin (T, rd/2) for the first rd dims of each head.
// inv_f[i] = 1 / base'^(2i/rd) in float32, as the reference's Rotary builds it with torch; base' =
// base, or base * (T/1024)^(rd/(rd-2)) (NTK scaling, in double as Python computes it) when
// T > 1024. The angle t * inv_f[i] is a float32 product too; cos and sin are taken of that float.
// (The GPU computes them here too and copies them: rope_tables in layers.cuh.)
inline void rope_inv_freq_cpu(float *inv_f, int T, int rd, double base) {
    double b = base;
    if (T > ROPE_REF_LEN) b = base * std::pow((double)T / ROPE_REF_LEN, (double)rd / (double)(rd - 2));
    for (int i = 0; i < rd / 2; i++) {
        float e = (float)(2 * i) / (float)rd;  // torch.arange(0, rd, 2, float32) / rd
        inv_f[i] = 1.0f / std::pow((float)b, e);  // python float ** float32 tensor: float32 pow
    }
}
template <typename real>
void rope_tables_cpu(real *cos_t, real *sin_t, int T, int rd, double base) {
    const int half = rd / 2;
    std::vector<float> inv_f(half);
    rope_inv_freq_cpu(inv_f.data(), T, rd, base);
    for (int i = 0; i < half; i++) {
        for (int t = 0; t < T; t++) {
            float angle = (float)t * inv_f[i];
            cos_t[(size_t)t * half + i] = (real)std::cos((real)angle);
            sin_t[(size_t)t * half + i] = (real)std::sin((real)angle);
        }
    }
}

// ----------------------------------------------------------------------------
// which layers have what

inline bool layer_has_xsa(const Config &c, int l) { return l >= c.num_layers - c.xsa_last_n; }
// index k of layer l in VE_LAYERS (its ve_layer_scales[k]), or -1
inline int layer_ve_index(const Config &c, int l) {
    for (size_t k = 0; k < c.ve_layer_list.size(); k++) if (c.ve_layer_list[k] == l) return (int)k;
    return -1;
}

// Visit every CastedLinear weight of the reference (the ones QAT fake-quantizes; tok_emb, used
// by the head through F.linear, is not one): fn(pointer-in-Params, rows, cols). The same set as
// the Muon group of the tensor list. The CPU model quantizes through it (model_refresh_qat), the
// GPU model builds its fake_quant table from it (model_gpu_build).
template <typename T, typename Fn>
void visit_linear_weights(Params<T> &p, const Config &c, Fn fn) {
    const int D = c.model_dim, KVD = c.kv_dim, F = c.mlp_hidden;
    fn(p.bigram_proj, D, (int)c.bigram_dim);
    for (auto &bp : p.blocks) {
        fn(bp.c_q, D, D);
        fn(bp.c_k, KVD, D);
        fn(bp.c_v, KVD, D);
        fn(bp.attn_proj, D, D);
        fn(bp.fc, F, D);
        fn(bp.mlp_proj, D, F);
    }
    if (c.ve_enabled) fn(p.ve_proj, KVD, (int)c.ve_dim);
}

// ----------------------------------------------------------------------------
// QAT, evaluation, batch geometry

// The weights a forward uses. Training sets it (late QAT switches it on once the LR multiplier
// drops below LATE_QAT_THRESHOLD); an eval forward always runs QAT_OFF, as the reference's
// model.eval() turns CastedLinear's fake quantization off (nll_fn_cpu, nll_fn_gpu).
enum QatMode : int {
    QAT_OFF = 0,   // the weights as they are
    QAT_INT6 = 1,  // every linear weight fake-quantized to int6 per row, straight-through gradient
};

// A forward pass as the evaluator (eval.h) sees it: nll(x, y, B, T, sliding, score_from, out)
// fills out[B*T] with the per-position cross-entropy of targets y given inputs x (both (B, T)
// int32), in eval mode. `sliding` says which eval calls: with EVAL_REF_ROUNDING the two round the
// logits differently (logits_rounding below). Only the positions t >= score_from of each row are
// wanted (the sliding eval scores a suffix of each window): the model skips what only the others
// need (the head, and the last block past its K and V) and leaves NaN in out before them; the
// losses it does compute are bit-identical to a full forward's (score_from = 0).
using NllFn = std::function<void(const int32_t *x, const int32_t *y, int B, int T, bool sliding, int score_from, float *nll)>;

// Whether an eval rounds the softcapped logits z to bf16 before its cross-entropy.
//   ours (EVAL_REF_ROUNDING=0): the model's own precision in both evals: the GPU rounds z (as
//     its training forward does), the CPU reference keeps fp32;
//   the record script's (EVAL_REF_ROUNDING=1): its standard eval calls the torch.compile'd
//     forward, where the softcap and the cross-entropy fuse into one kernel and z stays fp32;
//     its sliding eval calls the compiled forward_logits, which returns z as a bf16 tensor, and
//     the cross-entropy runs on that. So: standard fp32, sliding bf16, on both devices.
// Returns -1 for "the device's own default", else 0/1. (nll_fn_cpu, nll_fn_gpu apply it.)
inline int logits_rounding(const Config &c, bool sliding) { return c.eval_ref_rounding ? (sliding ? 1 : 0) : -1; }

// One optimizer step of the reference: REF_GRAD_ACCUM / world_size micro-steps per rank, each of
// B sequences of T tokens (TRAIN_BATCH_TOKENS = world_size * grad_accum * B * T). Computed once
// from the config and the number of ranks, and passed down to the trainers and the evals.
struct BatchGeometry {
    int world_size = 1, rank = 0;
    int grad_accum = REF_GRAD_ACCUM;  // micro-steps per optimizer step on this rank
    int B = 0, T = 0;                 // one micro-batch: B sequences of T = TRAIN_SEQ_LEN tokens
    // sequences of seq_len per validation batch on this rank (VAL_BATCH_SIZE split like a step)
    int val_batch_seqs(const Config &c, long seq_len) const {
        return (int)(c.val_batch_size / ((long)world_size * grad_accum) / seq_len);
    }
};
// The geometry of a config that passed config_check_batch(c, world_size) (config.h).
inline BatchGeometry batch_geometry(const Config &c, int world_size, int rank = 0) {
    BatchGeometry g;
    g.world_size = world_size;
    g.rank = rank;
    g.grad_accum = REF_GRAD_ACCUM / world_size;
    const long local_tokens = c.train_batch_tokens / ((long)world_size * g.grad_accum);
    g.B = (int)(local_tokens / c.train_seq_len);
    g.T = (int)c.train_seq_len;
    return g;
}

// ----------------------------------------------------------------------------
// model FLOPs (the TFLOP/s that train_gpt and dev/bench.sh report)
//
// Counted as "model FLOPs": the multiply-adds the math needs (2 FLOPs each), not what a kernel
// happens to do (no recomputation, no masked-out tiles). Per token of a training step:
//   matmuls: every weight matrix is applied once per token in the forward (2 FLOPs per weight)
//     and twice in the backward (the input's and the weight's gradient), so 6 FLOPs per weight:
//     per block c_q (D x D), c_k and c_v (KV*hd x D each: GQA shrinks these two), attn.proj
//     (D x D), mlp.fc (F x D), mlp.proj (D x F); once per token the bigram projection (D x
//     BIGRAM_DIM), the VE projection (KV*hd x VE_DIM, shared by the VE layers, when VE is on)
//     and the tied head (V x D: tok_emb used as the output matrix; its lookup is no matmul).
//   attention: query t attends to the t+1 keys 0..t (causal), so on average (T+1)/2 keys; per
//     key and query head, q.k and p.v are hd multiply-adds each: 2 * 2 * H * hd * (T+1)/2 =
//     2 * D * (T+1) FLOPs per token and layer forward, 3x that with the backward (dS -> dQ, dK;
//     dO -> dV, dP). GQA does not change it (every query head still sees every key); XSA, the
//     softmax, norms and elementwise layers are not counted.
// So flops/token = 6 * matmul_weights + 6 * L * D * (T + 1). PaLM's "6N + 12 L T D" counts the
// full T x T square; the causal half is what any flash kernel computes. The head is included
// (it is a real 1024 x 512 matmul per token). Forward only (an eval): a third of it.
inline double model_matmul_weights(const Config &c) {
    const double D = (double)c.model_dim, KVD = (double)c.kv_dim, F = (double)c.mlp_hidden;
    const double block = D * D + 2 * KVD * D + D * D + F * D + D * F;
    return (double)c.num_layers * block + D * (double)c.bigram_dim + (c.ve_enabled ? KVD * (double)c.ve_dim : 0.0) +
           (double)c.vocab_size * D;
}
inline double model_flops_per_token(const Config &c, long T) {
    return 6.0 * model_matmul_weights(c) + 6.0 * (double)c.num_layers * (double)c.model_dim * (double)(T + 1);
}
// The bf16 ceiling the speed work measures against on one H200 (issue [F] sets it at 790 TFLOP/s;
// the data sheet's dense figure is higher, and no real GEMM reaches that).
constexpr double H200_BF16_TFLOPS = 790.0;
