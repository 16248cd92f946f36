// model_gpu.cuh: the whole model on one GPU: weights, activations, forward and backward.
//
// The GPU twin of ModelCPU (model_cpu.h): model_gpu_forward / model_gpu_backward run the same
// ops in the same order as model_forward / model_backward, with the kernels of layers.cuh,
// attention.cuh, loss.cuh and the GEMMs of matmul.cuh. Read it beside model_cpu.h; the comments
// here are about what differs.
//
// Memory (the letters of model_cpu.h; N = B*T tokens of one micro-batch):
//   params, grads   (flat)  fp32   master weights and their gradients, the tensor list's layout
//                                  (tensors.h): checkpoints and the optimizer use them as they are
//   wbf             (flat)  bf16   the weights the kernels read: a cast of params, with the linear
//                                  weights fake-quantized under late QAT. The model owns it: the
//                                  forward refreshes it when params or the QAT mode changed since
//                                  (model_gpu_refresh_weights; call model_gpu_params_changed after
//                                  writing params other than through model_gpu_set_params)
//   activations             bf16   what the backward needs, per layer (LayerActsGPU), plus rstd /
//                                  lse / vnorm in fp32; 10.5 N*D bf16 values per layer at the seed
//                                  shape (D=512, KV dim 256, F=1536: relu^2 alone is 3 of them, q
//                                  and k after RoPE 1.5), 11.5 on the XSA layers (their output)
//   folded weights  (per layer) bf16  the proj weights with attn_scale / mlp_scale folded in
//                                  (FoldedWeightsGPU), refreshed with wbf
//   gradient activations    bf16   a handful of (N, D) buffers reused by every layer: the backward
//                                  updates the residual stream's gradient `dres` in place
//
// Precision follows the reference under torch.autocast(bfloat16): bf16 activations and GEMM
// operands, fp32 accumulation and reductions, fp32 parameter gradients (accumulated over
// micro-steps in fp32, never rounded). The softcapped logits are rounded to bf16 before the
// cross-entropy as the reference does.
//
// What is not kept of the CPU's activations, each per layer (the forward writes it to a buffer
// that every layer reuses; the backward recomputes it where it is needed, or does without):
//   - the block input: the previous block's output, kept anyway; on the U-Net skip layers
//     prev + skip_weights * enc, recomputed for resid_mix's backward (residual_scale_forward);
//   - x_in and x_mid, the rmsnorms' inputs: their backward reads the outputs ln1 / ln2 (kept for
//     the GEMMs' weight gradients) with rstd instead (rmsnorm_backward_from_out);
//   - qn, kn, the per-head rmsnorm's outputs: the q/k backward recomputes them in registers from
//     q and k (attention's inputs, kept), xn = RoPE^T(q) / q_gain (qk_norm_rope_gain_backward
//     with out; 150 MB of stores a layer less at the seed shape);
//   - relu(fc): on Hopper the fc GEMM's epilogue writes relu^2 itself (MLP_GEMM, below); else
//     cuBLASLt's RELU epilogue writes relu(fc) and relu2_forward squares it in place; the backward
//     takes relu' from relu^2 (relu2_backward_from_out, or in the input-gradient GEMM's epilogue);
//   - the embedding sum before its rmsnorm (backward from emb_norm, as for x_in).
// The recomputes are exact: the same kernels on the same bf16 values give the same bits. The
// backwards from an output (rmsnorm, relu^2) are the same math with one bf16 rounding moved
// (the output's instead of the input's; see layers.cuh).
// Gradient buffers share memory where their lifetimes do not overlap (said at each).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cuda_utils.cuh"  // defines: cudaCheck, DeviceInfo
#include "model.h"         // defines: Config, the tensor list, layer_has_xsa, layer_ve_index, QatMode, NllFn
#include "attention.cuh"   // defines: attention_forward/backward, xsa_forward/backward
#include "layers.cuh"      // defines: the memory-bound layers, weights_to_bf16
#include "loss.cuh"        // defines: crossentropy_softcap_fused, loss_sum
#include "matmul.cuh"      // defines: matmul_forward/backward (cuBLASLt), matmul_relu2_* (Hopper)

// ----------------------------------------------------------------------------
// the MLP's fc GEMM and relu^2: which path

// MLP_GEMM (developer knob, read once) picks the path of each direction:
//   cublas: the fc GEMM with cuBLASLt's RELU epilogue, then relu2_forward in place; backward, the
//           input-gradient GEMM then relu2_backward_from_out.
//   fused (the default): relu^2 (and its gradient factor) in the epilogue of the Hopper GEMMs
//           matmul_relu2_forward / matmul_relu2_backward_dx_wt (matmul.cuh): one bf16 rounding
//           instead of two and no elementwise pass. The backward reads the proj weight with
//           mlp_scale folded in and transposed (FoldedWeightsGPU::mlp_t). Measured on the H200
//           (seed shape, dev_matmul, 2026-12-01): forward 237.5 us against 347.8 cuBLASLt + pass,
//           backward 377.5 us against 423.9 (2026-12-02: 343.5 with the factor 2 sqrt(h) from
//           rsqrt.approx, variant 6). RELU2_BWD (matmul.cuh) picks the fused backward's
//           pipeline; its variants 5, 7 and 8 round twice, as the cublas path does.
//   fwd:    the fused forward, the cublas backward.
// Where the fused kernels cannot run (no sm_90a kernel, or shapes that are not multiples of 64)
// the cublas path runs. The CPU model rounds no activations, so it is the twin of every mode
// (dev/model.cu's tolerances cover the rounding moved), and the backward from relu^2 reads the
// same stored h whichever forward wrote it. The fused kernels sum every dot product in one fixed
// order whatever M is, so the eval's row invariance (matmul.cuh, MatmulOnePass) holds too.
enum MlpGemmMode { MLP_GEMM_CUBLAS = 0, MLP_GEMM_FUSED_FWD = 1, MLP_GEMM_FUSED = 2 };
inline MlpGemmMode mlp_gemm_mode() {
    static const MlpGemmMode mode = (MlpGemmMode)env_choice("MLP_GEMM", {"cublas", "fwd", "fused"}, MLP_GEMM_FUSED);
    return mode;
}
inline bool mlp_gemm_fused_forward() { return mlp_gemm_mode() != MLP_GEMM_CUBLAS; }
inline bool mlp_gemm_fused_backward() { return mlp_gemm_mode() == MLP_GEMM_FUSED; }

// QKV_GEMM (developer knob, read once): grouped runs the q, k, v projections as one Hopper GEMM
// (matmul_forward_grouped: N = 512 + 256 + 256 at the seed shape) and their input gradients as one
// (matmul_backward_dinp_grouped: dln = dq W_q + dk W_k + dv W_v, K = 1024, dln written once);
// fused (the default) is grouped with q and k's per-head RMSNorm, RoPE and gain in the forward
// GEMM's epilogue (matmul_forward_qkv_norm: q_raw / k_raw are not written and read back; head
// dim 64 and ROPE_DIMS 16, else grouped; H200: 260 us a layer against 290 for the GEMM and the
// two q/k passes, -2.2 ms a training step; its ping-pong form, QKV_FWD=1 (matmul.cuh), 244 us
// against 277); cublas runs three cuBLASLt GEMMs each way, the last
// two input gradients adding into dln (beta = 1). The weight gradients are cuBLASLt either way. Where the
// Hopper kernels cannot run (no sm_90a kernel, dimensions not multiples of 64) the cublas path runs.
enum QkvGemmMode { QKV_GEMM_CUBLAS = 0, QKV_GEMM_GROUPED = 1, QKV_GEMM_FUSED = 2 };
inline QkvGemmMode qkv_gemm_mode() {
    static const QkvGemmMode mode = (QkvGemmMode)env_choice("QKV_GEMM", {"cublas", "grouped", "fused"}, QKV_GEMM_FUSED);
    return mode;
}
inline bool qkv_gemm_grouped() { return qkv_gemm_mode() != QKV_GEMM_CUBLAS; }

// PROJ_GEMM (developer knob, read once): the attention projection's forward (y W^T) and the
// backward's d y = dres (diag(attn_scale) W) (both (N, 512) x (512, 512) at the seed shape) on
// cuBLASLt ("cublas", the default) or on the ping-pong kernel ("pingpong": matmul_forward_grouped's
// variant 1 with one group, 4 n-blocks of 128 columns, W's block held in shared memory). The
// ping-pong form was written to beat cuBLASLt's 89 us a call under ncu, but it lost alone (H200,
// dev_matmul's bench: 86.2 us against cuBLASLt's autotuned 75.4) and ran level in the training
// step (dev/ab.sh, 2 x 2 runs in two calls: 461.32 / 460.88 and 467.89 / 468.01 ms a step,
// pingpong / cublas), so the library keeps the job. Where the Hopper kernel cannot run, cuBLASLt does.
inline bool proj_gemm_pingpong() {
    static const bool pp = env_choice("PROJ_GEMM", {"cublas", "pingpong"}, 0) == 1;
    return pp;
}
// out (N, OC) = inp (N, IC) @ w^T, w (OC, IC): matmul_forward, on the ping-pong kernel per PROJ_GEMM
inline void proj_forward(bf16 *out, const bf16 *inp, const bf16 *w, int N, int IC, int OC, cudaStream_t stream) {
    bf16 *const outs[1] = {out};
    const bf16 *const ws[1] = {w};
    const int n[1] = {OC};
    if (proj_gemm_pingpong() && matmul_forward_grouped_supported(outs, inp, ws, n, 1, N, IC))
        matmul_forward_grouped(outs, inp, ws, n, 1, N, IC, stream, 1);
    else
        matmul_forward(out, inp, w, N, IC, OC, stream);
}

// ----------------------------------------------------------------------------
// one device allocation carved into many buffers (256-byte aligned each)

struct DeviceArena {
    char *base = nullptr;
    size_t bytes = 0, used = 0;
};
// Two passes over the same carve function: the first (base null) only counts.
template <typename T>
inline T *arena_take(DeviceArena &a, size_t n) {
    size_t off = (a.used + 255) & ~(size_t)255;
    a.used = off + std::max<size_t>(n, 1) * sizeof(T);
    return a.base ? (T *)(a.base + off) : nullptr;
}

// ----------------------------------------------------------------------------
// the state

struct LayerActsGPU {
    bf16 *resid;     // (N,D)     the block input: the previous output (null on skip layers: recomputed)
    float *rstd1;    // (N)       of x_in = mix[0]*resid + mix[1]*x0 (x_in itself is not kept)
    bf16 *ln1;       // (N,D)     rmsnorm(x_in) * s
    bf16 *q;         // (N,H,hd)  gain * RoPE(rmsnorm(c_q output)), attention's input; the q backward's too
    bf16 *k;         // (N,KV,hd) RoPE(rmsnorm(c_k output))
    float *rstd_q;   // (N,H)     the per-head rmsnorms' 1/rms
    float *rstd_k;   // (N,KV)
    bf16 *v;         // (N,KV,hd)
    bf16 *att;       // (N,H,hd)
    float *lse;      // (B,H,T)
    float *vnorm;    // (N,KV)    XSA layers only
    bf16 *xsa_out;   // (N,D)     XSA layers only: the proj GEMM's input (its weight gradient reads it)
    bf16 *attn_out;  // (N,D)     = ModelGPU::proj_out (the backward does without it: fold_scale_grad)
    float *rstd2;    // (N)       of x_mid = x_in + attn_scale * attn_out (not kept)
    bf16 *ln2;       // (N,D)     rmsnorm(x_mid) * s
    bf16 *fc_act;    // (N,F)     relu(fc(ln2))^2 (the fc GEMM's RELU epilogue, squared in place)
    bf16 *mlp_out;   // (N,D)     = ModelGPU::proj_out (as attn_out)
    bf16 *out;       // (N,D)     the block output
};

// Per layer, the residual scales folded into the proj weights that feed them (layers.cuh,
// fold_scale_transpose): the backward's input-gradient GEMMs read these, so no pass scales the
// (N, D) gradient by attn_scale / mlp_scale. Derived from wbf and the scales, refreshed with wbf.
struct FoldedWeightsGPU {
    bf16 *attn_t;  // (D, D) (diag(attn_scale) attn_proj)^T
    bf16 *mlp_t;   // (F, D) (diag(mlp_scale) mlp_proj)^T: K-major, as the fused relu^2 GEMM reads it
};

struct ModelGPU {
    Config config;
    TensorList tensors;
    int max_N = 0;                  // the most tokens one forward may take (buffers are sized for it)
    int B = 0, T = 0;               // shape of the last forward
    bool have_targets = false;      // the last forward had targets (the backward needs them)
    // weights
    float *params = nullptr;        // (flat) fp32 master
    float *grads = nullptr;         // (flat) fp32
    bf16 *wbf = nullptr;            // (flat) bf16 weights as the kernels read them
    Params<float> p, g;             // pointers into params / grads
    Params<bf16> w;                 // pointers into wbf
    QatMode qat = QAT_OFF;          // the weights the training forward uses (set by the trainer)
    uint64_t params_version = 1;    // bumped by every change of params
    uint64_t wbf_version = 0;       // the params_version that wbf was computed from ...
    QatMode wbf_qat = QAT_OFF;      // ... and the mode it was computed for
    LinearTable linear;             // the linear weights (fake-quantized under QAT)
    std::vector<FoldedWeightsGPU> fold;  // per layer (in the arena), refreshed with wbf
    float *gfold = nullptr;         // (D, max(D, F)) a proj weight's unscaled gradient of one micro-step
    // inputs
    int *ids = nullptr, *targets = nullptr, *bigram_idx = nullptr;  // (max_N)
    int *pinned = nullptr;          // (2, 2, max_N) host staging for ids and targets, double-buffered
    cudaEvent_t staged[2];          // the copy out of staging slot k is done
    int stage_slot = 0;
    float *rope_cos = nullptr, *rope_sin = nullptr;  // (T, rd/2) for rope_T
    int rope_T = 0, rope_max_T = 0;
    bool round_logits = true;       // round the softcapped logits to bf16 before the loss (see loss.cuh)
    int score_from = 0;             // eval: the next forward wants positions [score_from, T) only (model_gpu_forward)
    int fwd_score_from = 0;         // what the last forward used (> 0: no backward)
    int *scored_targets = nullptr;  // (max_N) the targets of the scored rows
    // activations
    bf16 *bg_emb, *bg_proj, *emb_norm, *x0;         // (N,bigram_dim), (N,D) x3 (the sum before the norm: in xres)
    float *rstd0;                                   // (N)
    bf16 *ve_emb, *ve_proj, *ve_base;               // (N,ve_dim), (N,KVD) x2   VE only
    std::vector<LayerActsGPU> layers;
    bf16 *proj_out;                 // (N,D) scratch: every block's attn_out and mlp_out (not kept)
    bf16 *xres;                     // (N,D) scratch: the forward's embedding sum, a block's input on
                                    // skip layers, x_in, x_mid (in place); the backward's recomputed input
    bf16 *q_raw, *k_raw;            // (N,D), (N,KVD) scratch: c_q / c_k outputs where the GEMM's epilogue
                                    // does not normalize (an eval forward: then q / k in place)
    bf16 *dfc;                      // (N,F) scratch: d relu^2, then d fc in place (backward)
    bf16 *xf;                       // (N,D)
    float *rstd_f;                  // (N)
    bf16 *logits;                   // (N,V) raw logits; after a training forward, d loss / d raw
    float *losses;                  // (N) per-position NLL
    float *loss_acc = nullptr;      // (1) sum of loss_scale * mean loss over the step's micro-batches
    // gradient activations
    bf16 *dres, *dx0, *dln, *dq, *datt_xsa, *datt, *dk, *dv;  // (N,D) x6, (N,KVD) x2
    bf16 *dskip;                    // (n_skip, N, D)
    bf16 *dbg_proj;                 // = dq: the embeddings' backward runs after the blocks'
    bf16 *dbg_emb, *dve_base, *dve_proj, *dve_emb;
    float *attn_scratch = nullptr;  // attention_backward's fp32 scratch (both dQ accumulators, D, lse2)
    DeviceScratch scratch;          // layers.cuh's reductions and sorts
    DeviceArena arena;
    size_t weight_bytes = 0;        // params + grads + wbf
};

// Carve (or count, with a.base null) every buffer sized by max_N.
inline void model_gpu_carve(ModelGPU &m, DeviceArena &a) {
    const Config &c = m.config;
    const size_t N = m.max_N, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, KVD = c.kv_dim, F = c.mlp_hidden;
    const size_t V = c.vocab_size, VE = c.ve_enabled ? 1 : 0;
    m.ids = arena_take<int>(a, N);
    m.targets = arena_take<int>(a, N);
    m.bigram_idx = arena_take<int>(a, N);
    m.rope_cos = arena_take<float>(a, (size_t)m.rope_max_T * c.rope_dims_eff / 2);
    m.rope_sin = arena_take<float>(a, (size_t)m.rope_max_T * c.rope_dims_eff / 2);
    m.bg_emb = arena_take<bf16>(a, N * c.bigram_dim);
    m.bg_proj = arena_take<bf16>(a, N * D);
    m.emb_norm = arena_take<bf16>(a, N * D);
    m.x0 = arena_take<bf16>(a, N * D);
    m.rstd0 = arena_take<float>(a, N);
    m.ve_emb = arena_take<bf16>(a, VE * N * c.ve_dim);
    m.ve_proj = arena_take<bf16>(a, VE * N * KVD);
    m.ve_base = arena_take<bf16>(a, VE * N * KVD);
    m.layers.resize(c.num_layers);
    for (int l = 0; l < c.num_layers; l++) {
        LayerActsGPU &la = m.layers[l];
        const bool xsa = layer_has_xsa(c, l);
        la.resid = nullptr;  // set by the forward
        la.rstd1 = arena_take<float>(a, N);
        la.ln1 = arena_take<bf16>(a, N * D);
        la.q = arena_take<bf16>(a, N * D);
        la.k = arena_take<bf16>(a, N * KVD);
        la.rstd_q = arena_take<float>(a, N * H);
        la.rstd_k = arena_take<float>(a, N * KV);
        la.v = arena_take<bf16>(a, N * KVD);
        la.att = arena_take<bf16>(a, N * D);
        la.lse = arena_take<float>(a, N * H);
        la.vnorm = xsa ? arena_take<float>(a, N * KV) : nullptr;
        la.xsa_out = xsa ? arena_take<bf16>(a, N * D) : nullptr;
        la.attn_out = nullptr;  // = proj_out, below
        la.rstd2 = arena_take<float>(a, N);
        la.ln2 = arena_take<bf16>(a, N * D);
        la.fc_act = arena_take<bf16>(a, N * F);
        la.mlp_out = nullptr;
        la.out = arena_take<bf16>(a, N * D);
    }
    m.proj_out = arena_take<bf16>(a, N * D);
    for (LayerActsGPU &la : m.layers) la.attn_out = la.mlp_out = m.proj_out;
    m.fold.resize(c.num_layers);
    for (FoldedWeightsGPU &f : m.fold) {
        f.attn_t = arena_take<bf16>(a, D * D);
        f.mlp_t = arena_take<bf16>(a, F * D);
    }
    m.gfold = arena_take<float>(a, D * std::max(D, F));
    m.xres = arena_take<bf16>(a, N * D);
    m.q_raw = arena_take<bf16>(a, N * D);
    m.k_raw = arena_take<bf16>(a, N * KVD);
    m.dfc = arena_take<bf16>(a, N * F);
    m.xf = arena_take<bf16>(a, N * D);
    m.rstd_f = arena_take<float>(a, N);
    m.logits = arena_take<bf16>(a, N * V);
    m.losses = arena_take<float>(a, N);
    m.scored_targets = arena_take<int>(a, N);
    m.loss_acc = arena_take<float>(a, 1);
    m.dres = arena_take<bf16>(a, N * D);
    m.dx0 = arena_take<bf16>(a, N * D);
    m.dln = arena_take<bf16>(a, N * D);
    m.dq = arena_take<bf16>(a, N * D);
    m.datt_xsa = arena_take<bf16>(a, N * D);
    m.datt = arena_take<bf16>(a, N * D);
    m.dk = arena_take<bf16>(a, N * KVD);
    m.dv = arena_take<bf16>(a, N * KVD);
    m.dskip = arena_take<bf16>(a, (size_t)c.num_skip * N * D);
    m.dbg_proj = m.dq;
    m.dbg_emb = arena_take<bf16>(a, N * c.bigram_dim);
    m.dve_base = arena_take<bf16>(a, VE * N * KVD);
    m.dve_proj = arena_take<bf16>(a, VE * N * KVD);
    m.dve_emb = arena_take<bf16>(a, VE * N * c.ve_dim);
    m.attn_scratch = arena_take<float>(a, attention_backward_scratch_floats(1, (int)N, (int)H, (int)c.head_dim));
    const int C = (int)std::max<long>(std::max<long>(D, c.bigram_dim), c.ve_dim);
    const int rows = (int)std::max<long>(V, c.bigram_vocab_size);
    m.scratch.bytes = layers_scratch_bytes((int)N, C, rows);
    m.scratch.ptr = arena_take<char>(a, m.scratch.bytes);
}

// The shapes the GPU kernels support (the CPU path takes any): one line per problem, exit 2.
inline void model_gpu_check_config(const Config &c) {
    if (c.head_dim != attn::HD)
        fatal_config("the GPU path needs a head dim of %d (MODEL_DIM / NUM_HEADS = %ld / %ld = %d); use --device cpu for other shapes",
                     attn::HD, c.model_dim, c.num_heads, c.head_dim);
    auto mult8 = [](long v, const char *what) {
        if (v % 8 != 0) fatal_config("the GPU path needs %s to be a multiple of 8 (got %ld): its kernels move 8 bf16 at a time", what, v);
    };
    mult8(c.model_dim, "MODEL_DIM");
    mult8(c.bigram_dim, "BIGRAM_DIM");
    if (c.ve_enabled) mult8(c.ve_dim, "VE_DIM");
}

// Allocate everything for forwards of up to max_N tokens with sequences of up to max_T.
inline void model_gpu_build(ModelGPU &m, const Config &c, int max_N, int max_T) {
    model_gpu_check_config(c);
    m.config = c;
    m.tensors = build_tensor_list(c);
    m.max_N = max_N;
    m.rope_max_T = max_T;
    const size_t n = m.tensors.flat;
    cudaCheck(cudaMalloc(&m.params, n * sizeof(float)));
    cudaCheck(cudaMalloc(&m.grads, n * sizeof(float)));
    cudaCheck(cudaMalloc(&m.wbf, n * sizeof(bf16)));
    cudaCheck(cudaMemset(m.params, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m.grads, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m.wbf, 0, n * sizeof(bf16)));
    m.weight_bytes = n * (2 * sizeof(float) + sizeof(bf16));
    params_bind(m.p, c, m.params);
    params_bind(m.g, c, m.grads);
    params_bind(m.w, c, m.wbf);
    m.linear = linear_table_create(c, m.params);
    m.params_version = 1;
    m.wbf_version = 0;
    // activations: count, allocate, carve
    m.arena = DeviceArena();
    model_gpu_carve(m, m.arena);
    m.arena.bytes = m.arena.used;
    cudaCheck(cudaMalloc(&m.arena.base, m.arena.bytes));
    m.arena.used = 0;
    model_gpu_carve(m, m.arena);
    cudaCheck(cudaMallocHost(&m.pinned, 4 * (size_t)max_N * sizeof(int)));
    for (cudaEvent_t &e : m.staged) cudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    m.stage_slot = 0;
    m.rope_T = 0;
}

inline void model_gpu_free(ModelGPU &m) {
    cudaFreeCheck(m.params);
    cudaFreeCheck(m.grads);
    cudaFreeCheck(m.wbf);
    linear_table_free(m.linear);
    cudaFreeCheck(m.arena.base);
    if (m.pinned) cudaCheck(cudaFreeHost(m.pinned));
    m.pinned = nullptr;
    for (cudaEvent_t &e : m.staged) cudaCheck(cudaEventDestroy(e));
}

// Host <-> device copies of the flat fp32 weights (checkpoints, EMA swaps, tests).
inline void model_gpu_params_changed(ModelGPU &m) { m.params_version++; }
inline void model_gpu_set_params(ModelGPU &m, const float *host) {
    cudaCheck(cudaMemcpy(m.params, host, m.tensors.flat * sizeof(float), cudaMemcpyHostToDevice));
    model_gpu_params_changed(m);
}
inline void model_gpu_get_params(const ModelGPU &m, float *host) {
    cudaCheck(cudaMemcpy(host, m.params, m.tensors.flat * sizeof(float), cudaMemcpyDeviceToHost));
}
inline void model_gpu_zero_grad(ModelGPU &m, cudaStream_t stream) {
    cudaCheck(cudaMemsetAsync(m.grads, 0, m.tensors.flat * sizeof(float), stream));
}

// wbf <- bf16(params), then under QAT_INT6 the linear weights <- their fake-quantized values;
// only when params or m.qat changed since the last refresh. The forward calls it.
inline void model_gpu_refresh_weights(ModelGPU &m, cudaStream_t stream) {
    if (m.wbf_version == m.params_version && m.wbf_qat == m.qat) return;
    weights_to_bf16(m.wbf, m.params, m.tensors.flat, m.linear, m.qat, stream);
    const int D = (int)m.config.model_dim, F = (int)m.config.mlp_hidden;
    for (int l = 0; l < (int)m.config.num_layers; l++) {
        fold_scale_transpose(m.fold[l].attn_t, m.w.blocks[l].attn_proj, m.p.blocks[l].attn_scale, D, D, stream);
        fold_scale_transpose(m.fold[l].mlp_t, m.w.blocks[l].mlp_proj, m.p.blocks[l].mlp_scale, D, F, stream);
    }
    m.wbf_version = m.params_version;
    m.wbf_qat = m.qat;
}

// Copy a (B, T) batch of ids and targets (targets may be null) from the host to the device,
// asynchronously through pinned staging: the host may refill its vectors right away.
inline void model_gpu_upload(ModelGPU &m, const int *ids, const int *targets, int B, int T, cudaStream_t stream) {
    const size_t N = (size_t)B * T;
    if (B < 1 || T < 1 || N > (size_t)m.max_N)
        fatal("model_gpu: a batch of %d x %d tokens does not fit the %d the model was built for", B, T, m.max_N);
    const int k = m.stage_slot;
    m.stage_slot ^= 1;
    cudaCheck(cudaEventSynchronize(m.staged[k]));  // the previous copy out of this slot is done
    int *hi = m.pinned + (size_t)k * 2 * m.max_N, *ht = hi + m.max_N;
    memcpy(hi, ids, N * sizeof(int));
    cudaCheck(cudaMemcpyAsync(m.ids, hi, N * sizeof(int), cudaMemcpyHostToDevice, stream));
    if (targets) {
        memcpy(ht, targets, N * sizeof(int));
        cudaCheck(cudaMemcpyAsync(m.targets, ht, N * sizeof(int), cudaMemcpyHostToDevice, stream));
    }
    cudaCheck(cudaEventRecord(m.staged[k], stream));
    m.B = B;
    m.T = T;
    m.have_targets = targets != nullptr;
}

// ----------------------------------------------------------------------------
// forward

// dst (B, T - s, C) = rows [s, T) of each sequence of src (B, T, C): the eval's scored rows, one
// 2D copy (CPU twin: gather_suffix_rows_cpu)
template <typename E>
inline void gather_suffix_rows(E *dst, const E *src, int B, int T, int s, int C, cudaStream_t stream) {
    const size_t row = (size_t)C * sizeof(E);
    cudaCheck(cudaMemcpy2DAsync(dst, (T - s) * row, src + (size_t)s * C, T * row, (T - s) * row, B, cudaMemcpyDeviceToDevice,
                                stream));
}

// The forward of the batch last uploaded. With targets: per-position losses in m.losses and
// loss_scale * mean loss added to m.loss_acc (set instead when !accumulate_loss); with backward,
// the logits buffer is turned into d(loss_scale * mean loss)/d(raw logits) in the same pass, ready
// for model_gpu_backward. Uses the weights in wbf for m.qat, refreshed first if stale.
// Eval (no backward) with m.score_from = s > 0: only the positions [s, T) of each sequence are
// wanted. Attention needs every position's K and V in every layer, but what follows the last
// block's attention (XSA, attn_proj, the MLP), the final norm, the head and the loss are per-row:
// they run on the scored rows only, and those activations, m.xf, m.logits and m.losses then hold
// (B, T - s, ...). Bit-identical to those rows of a full forward: every op there is per-row and
// the eval's GEMMs are one-pass (MatmulOnePass). That block's attention skips the query tiles
// below s (attention_forward's q_from: the same tiles as a full call, so the same bits), as the
// CPU twin, model_forward, skips the unscored queries.
// The eval forward also skips the stores only the backward reads (each layer's own q, k and their
// rstds: it normalizes q and k in place in the shared scratch).
inline void model_gpu_forward(ModelGPU &m, float loss_scale, bool backward, bool accumulate_loss, cudaStream_t stream) {
    const Config &c = m.config;
    const int B = m.B, T = m.T, N = B * T, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
    const int KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size, L = c.num_layers, rd = c.rope_dims_eff;
    const int nE = c.num_encoder;
    const Params<float> &p = m.p;
    const Params<bf16> &w = m.w;
    if (T > m.rope_max_T) fatal("model_gpu: sequence length %d exceeds the %d the model was built for", T, m.rope_max_T);
    const int sf = m.score_from, Ns = B * (T - sf);  // the scored rows
    if (sf < 0 || sf >= T || (sf > 0 && backward))
        fatal("model_gpu_forward: score_from=%d must be in [0, T=%d), and 0 for a training forward", sf, T);
    m.fwd_score_from = sf;
    const MatmulOnePass one_pass(!backward);
    model_gpu_refresh_weights(m, stream);
    if (m.rope_T != T) {  // the RoPE base depends on T (NTK scaling past 1024)
        cudaCheck(cudaStreamSynchronize(stream));
        rope_tables(m.rope_cos, m.rope_sin, T, rd, c.rope_base);
        m.rope_T = T;
    }
    // embeddings: x0 = smear(rmsnorm(tok_emb[ids] + scale * bigram.proj(bigram.embed[hash])))
    bigram_hash(m.bigram_idx, m.ids, B, T, (int)c.bigram_vocab_size, stream);
    embedding_forward(m.bg_emb, m.bigram_idx, w.bigram_embed, N, (int)c.bigram_dim, (int)c.bigram_vocab_size, stream);
    matmul_forward(m.bg_proj, m.bg_emb, w.bigram_proj, N, (int)c.bigram_dim, D, stream);
    embed_sum_forward(m.xres, m.ids, w.tok_emb, m.bg_proj, p.bigram_scale, N, D, V, stream);
    rmsnorm_forward(m.emb_norm, m.rstd0, m.xres, N, D, 1.f, stream);
    smear_forward(m.x0, m.emb_norm, p.smear_gate, B, T, D, stream);
    if (c.ve_enabled) {
        embedding_forward(m.ve_emb, m.ids, w.ve_embed, N, (int)c.ve_dim, V, stream);
        matmul_forward(m.ve_proj, m.ve_emb, w.ve_proj, N, (int)c.ve_dim, KVD, stream);
        scalar_scale_forward(m.ve_base, m.ve_proj, p.ve_scale, (size_t)N * KVD, false, stream);
    }

    const bf16 *x = m.x0;
    // A block's last residual (out = x_mid + mlp_scale * mlp_out) is left to the next block's
    // start, which does it with the skip add, the mix and ln1 in one pass (block_start_forward)
    const bool fuse_start = block_start_fusable(D);
    const float *pending_scale = nullptr;  // the previous block's mlp_scale, while its out is pending
    for (int l = 0; l < L; l++) {
        LayerActsGPU &la = m.layers[l];
        const BlockParams<float> &bp = p.blocks[l];
        const BlockParams<bf16> &bw = w.blocks[l];
        const float s = c.ln_scale ? (float)(1.0 / std::sqrt((double)l + 1)) : 1.f;
        const int i = l - nE;
        const bool skip = i >= 0 && i < c.num_skip;  // U-Net skip: resid = x + skip_weights[i] * enc, not kept
        if (pending_scale) {
            // the previous block's out, then x_in (into xres, over the previous x_mid) and ln1
            block_start_forward(m.layers[l - 1].out, m.xres, la.ln1, la.rstd1, m.xres, pending_scale, m.proj_out,
                                skip ? m.layers[nE - 1 - i].out : nullptr, skip ? p.skip_weights + (size_t)i * D : nullptr,
                                m.x0, bp.resid_mix, N, D, s, stream);
            la.resid = skip ? nullptr : (bf16 *)x;
            pending_scale = nullptr;
        } else {
            const bf16 *resid = x;  // no copy: the previous output is kept anyway
            if (skip) {
                residual_scale_forward(m.xres, x, p.skip_weights + (size_t)i * D, m.layers[nE - 1 - i].out, N, D, stream);
                resid = m.xres;
            }
            la.resid = resid == x ? (bf16 *)x : nullptr;
            // x_in (into xres, not kept) and ln1
            resid_mix_rmsnorm_forward(m.xres, la.ln1, la.rstd1, resid, m.x0, bp.resid_mix, N, D, s, stream);
        }
        // attention (in the sliding eval's last block, only the query tiles of the scored rows)
        // q, k after RoPE: kept for the backward in a training forward (la.q, la.k), else in place
        bf16 *q = backward ? la.q : m.q_raw, *k = backward ? la.k : m.k_raw;
        {
            const bf16 *const ws[3] = {bw.c_q, bw.c_k, bw.c_v};
            const int n[3] = {D, KVD, KVD};
            bf16 *const qkv[3] = {q, k, la.v};
            if (qkv_gemm_mode() == QKV_GEMM_FUSED && matmul_forward_qkv_norm_supported(qkv, la.ln1, ws, n, N, D, hd, rd)) {
                // q, k straight from the GEMM's epilogue (+ the rstds for the backward; no qn, kn:
                // the backward recomputes them from q, k)
                bf16 *const xn[2] = {nullptr, nullptr};
                float *const rstd[2] = {backward ? la.rstd_q : nullptr, backward ? la.rstd_k : nullptr};
                matmul_forward_qkv_norm(qkv, xn, rstd, la.ln1, ws, n, N, D, m.rope_cos, m.rope_sin, bp.q_gain, T, (float)RMS_EPS,
                                        stream);
            } else {
                bf16 *const outs[3] = {m.q_raw, m.k_raw, la.v};
                if (qkv_gemm_grouped() && matmul_forward_grouped_supported(outs, la.ln1, ws, n, 3, N, D))
                    matmul_forward_grouped(outs, la.ln1, ws, n, 3, N, D, stream);
                else
                    for (int g = 0; g < 3; g++) matmul_forward(outs[g], la.ln1, ws[g], N, D, n[g], stream);
                qk_norm_rope_gain_forward(q, nullptr, backward ? la.rstd_q : nullptr, m.q_raw, m.rope_cos,
                                          m.rope_sin, bp.q_gain, B, T, H, hd, rd, stream);
                qk_norm_rope_gain_forward(k, nullptr, backward ? la.rstd_k : nullptr, m.k_raw, m.rope_cos,
                                          m.rope_sin, nullptr, B, T, KV, hd, rd, stream);
            }
        }
        const int ve = layer_ve_index(c, l);
        if (ve >= 0) scalar_scale_forward(la.v, m.ve_base, p.ve_layer_scales[ve], (size_t)N * KVD, true, stream);
        // score_from, last block: only the rows [q0, T) of each sequence (Nq) go on past
        // attention, so attention computes only the query tiles that reach q0 (the last of its
        // 11 at the seed shape); their att, x_in (and v, for XSA) are gathered into backward-only
        // buffers (free in an eval forward). x_in is then updated in place: x_mid over it, as xres
        // is in training
        const int q0 = l == L - 1 ? sf : 0, Nq = B * (T - q0);
        attention_forward(la.att, la.lse, q, k, la.v, B, T, H, KV, hd, stream, q0);
        const bf16 *att = la.att, *v = la.v;
        bf16 *x_in = m.xres;
        if (q0 > 0) {
#ifdef BREAK_SCORED_ROWS  // a deliberately wrong variant (dev/broken_variants.sh): att gathered one position early
            gather_suffix_rows(m.datt, la.att - D, B, T, q0, D, stream);
#else
            gather_suffix_rows(m.datt, la.att, B, T, q0, D, stream);
#endif
            gather_suffix_rows(m.dres, m.xres, B, T, q0, D, stream);
            gather_suffix_rows(m.dv, la.v, B, T, q0, KVD, stream);
            att = m.datt, x_in = m.dres, v = m.dv;
        }
        const bool xsa = layer_has_xsa(c, l);
        if (xsa) xsa_forward(la.xsa_out, la.vnorm, att, v, Nq, H, KV, hd, stream);
        proj_forward(la.attn_out, xsa ? la.xsa_out : att, bw.attn_proj, Nq, D, D, stream);
        // x_mid (over x_in) and ln2
        residual_scale_rmsnorm_forward(x_in, la.ln2, la.rstd2, x_in, bp.attn_scale, la.attn_out, Nq, D, s, stream);
        // MLP: relu(u)^2, the reference's relu^2: fused into the fc GEMM, or the GEMM stores
        // relu(u) and it is squared in place (mlp_gemm_mode)
        if (mlp_gemm_fused_forward() && matmul_relu2_supported(Nq, D, F, la.fc_act, la.ln2, bw.fc)) {
            matmul_relu2_forward(la.fc_act, la.ln2, bw.fc, Nq, D, F, stream);
        } else {
            matmul_forward(la.fc_act, la.ln2, bw.fc, Nq, D, F, stream, /*relu=*/true);
            relu2_forward(la.fc_act, la.fc_act, (size_t)Nq * F, stream);
        }
        matmul_forward(la.mlp_out, la.fc_act, bw.mlp_proj, Nq, F, D, stream);
        // (below the last block x_in is xres and mlp_out proj_out, what the next block's start reads)
        if (l + 1 < L && fuse_start) pending_scale = bp.mlp_scale;
        else if (l + 1 < L) residual_scale_forward(la.out, x_in, bp.mlp_scale, la.mlp_out, Nq, D, stream);
        else residual_scale_rmsnorm_forward(la.out, m.xf, m.rstd_f, x_in, bp.mlp_scale, la.mlp_out, Nq, D, 1.f, stream);
        x = la.out;
    }

    // head: tied embedding, softcap and cross-entropy in one pass (see loss.cuh), on the Ns scored rows
    matmul_forward(m.logits, m.xf, w.tok_emb, Ns, D, V, stream);
    if (!m.have_targets) return;
    const int *targets = m.targets;
    if (sf > 0) {
        gather_suffix_rows(m.scored_targets, m.targets, B, T, sf, 1, stream);
        targets = m.scored_targets;
    }
    crossentropy_softcap_fused(m.logits, m.losses, targets, Ns, V, (float)c.logit_softcap, loss_scale / Ns, backward,
                               m.round_logits, stream);
    loss_sum(m.loss_acc, m.losses, Ns, loss_scale / Ns, accumulate_loss, stream);
}

// ----------------------------------------------------------------------------
// backward

// ACCUMULATES the gradient of the last training forward (model_gpu_forward with backward) into
// m.grads (zero them once per step: model_gpu_zero_grad). With QAT the weights of wbf were the
// fake-quantized ones: the input gradients use them and the weight gradients land on the fp32
// master (straight-through), as model_backward does.
inline void model_gpu_backward(ModelGPU &m, cudaStream_t stream) {
    const Config &c = m.config;
    if (!m.have_targets) fatal("model_gpu_backward: the last forward had no targets");
    if (m.fwd_score_from != 0) fatal("model_gpu_backward: the last forward was a scored-rows-only eval (score_from)");
    const int B = m.B, T = m.T, N = B * T, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
    const int KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size, L = c.num_layers, rd = c.rope_dims_eff;
    const int nE = c.num_encoder;
    const Params<float> &p = m.p;
    const Params<bf16> &w = m.w;
    Params<float> &dp = m.g;
    const size_t ND = (size_t)N * D;
    const DeviceScratch sc = m.scratch;

    // head: the logits buffer already holds d loss / d raw logits
    matmul_backward(m.dln, dp.tok_emb, m.logits, m.xf, w.tok_emb, N, D, V, false, true, stream);
    rmsnorm_backward(m.dres, m.dln, m.layers[L - 1].out, m.rstd_f, N, D, 1.f, false, stream);

    bool first_ve = true;  // dve_base sums over the VE layers: the first one visited writes it
    // the block-start backward in one pass, the U-Net skips' parts included (rmsnorm_resid_mix_backward
    // with ResidMixSkip), or the unfused launchers for rows of more than 1024 channels
    const bool fused_start = rmsnorm_resid_mix_fusable(D);
    // dQ: the q backward reads attention's fp32 accumulator itself where its token-row kernel runs
    // (bit for bit the dq pass + the bf16 backward, without the pass: layers.cuh), else attention
    // converts it into dq
    const bool dq_from_acc = qk_backward_from_acc_fits(H, hd, rd, m.rope_cos, m.rope_sin);
    const bool knorm_in_attn = attention_backward_knorm_fits(hd, rd);
    auto encoder_skip = [&](int j) { return j >= 0 && j < nE && nE - 1 - j < c.num_skip; };  // layer j's output feeds a skip
    for (int l = L - 1; l >= 0; l--) {
        LayerActsGPU &la = m.layers[l];
        const BlockParams<float> &bp = p.blocks[l];
        const BlockParams<bf16> &bw = w.blocks[l];
        BlockParams<float> &dbp = dp.blocks[l];
        const float s = c.ln_scale ? (float)(1.0 / std::sqrt((double)l + 1)) : 1.f;
        // dres: the gradient of this block's output; an encoder output also feeds a skip (the
        // fused block start above already added it)
        if (encoder_skip(l) && !fused_start) add_inplace(m.dres, m.dskip + (size_t)(nE - 1 - l) * ND, ND, stream);
        // MLP: out = x_mid + mlp_scale * (relu^2 @ W_proj^T); dres goes on as d x_mid. The scale is
        // folded into the proj (layers.cuh, fold_scale_*): G = dres^T relu^2 gives dW_proj and
        // dmlp_scale, and d relu^2 = dres @ (diag(mlp_scale) W_proj)
        matmul_backward(nullptr, m.gfold, m.dres, la.fc_act, nullptr, N, F, D, false, false, stream);
        fold_scale_grad(dbp.mlp_proj, dbp.mlp_scale, m.gfold, bp.mlp_scale, bw.mlp_proj, D, F, stream);
        // d fc_pre = d relu^2 * 2 sqrt(relu^2) (= 2 relu): in the GEMM's epilogue, or a pass
        if (mlp_gemm_fused_backward() && matmul_relu2_supported(N, D, F, m.dfc, m.dres, m.fold[l].mlp_t, la.fc_act)) {
            matmul_relu2_backward_dx_wt(m.dfc, m.dres, m.fold[l].mlp_t, la.fc_act, N, D, F, stream);
        } else {
            matmul_forward(m.dfc, m.dres, m.fold[l].mlp_t, N, D, F, stream);
            relu2_backward_from_out(m.dfc, m.dfc, la.fc_act, (size_t)N * F, false, stream);  // 2 sqrt(relu^2) = 2 relu
        }
        matmul_backward(m.dln, dbp.fc, m.dfc, la.ln2, bw.fc, N, D, F, false, true, stream);
        rmsnorm_backward_from_out(m.dres, m.dln, la.ln2, la.rstd2, N, D, s, true, stream);
        // attention: x_mid = x_in + attn_scale * (y @ W_attn_proj^T), y the XSA / attention output;
        // dres goes on as d x_in; the scale folded into the proj as the MLP's
        const bool xsa = layer_has_xsa(c, l);
        matmul_backward(nullptr, m.gfold, m.dres, xsa ? la.xsa_out : la.att, nullptr, N, D, D, false, false, stream);
        fold_scale_grad(dbp.attn_proj, dbp.attn_scale, m.gfold, bp.attn_scale, bw.attn_proj, D, D, stream);
        proj_forward(m.datt_xsa, m.dres, m.fold[l].attn_t, N, D, D, stream);
        bf16 *dq = dq_from_acc ? nullptr : m.dq;  // null: dQ stays in attention's accumulator
        AttnBwdPrepared prep;  // what the preprocess pass may skip
        // the two dQ accumulators alternate by layer: each call but the last zeroes the next
        // layer's (free in the Hopper kernel), so each but the first finds its own zero
        prep.dq_buf = l & 1, prep.dq_zero = l < L - 1, prep.zero_other = l > 0;
        // k's per-head rmsnorm + RoPE backward in attention's epilogue where it can (dk then comes
        // out as d c_k output, overwritten), else the q/k backward below
        if (knorm_in_attn) prep.k_rstd = la.rstd_k, prep.rope_cos = m.rope_cos, prep.rope_sin = m.rope_sin;
        if (xsa) {
            // XSA writes dv (its self-value term) and attention's D; attention then adds its
            // dq/dk/dv, so zero those (dq only when attention converts into it; dk not when
            // attention normalizes it: then it overwrites)
            xsa_backward(m.datt, m.dv, m.datt_xsa, la.att, la.v, la.vnorm, N, H, KV, hd, false, stream,
                         attention_backward_D(m.attn_scratch, B, T, H, hd), T);
            prep.D = true;
            if (dq) cudaCheck(cudaMemsetAsync(m.dq, 0, ND * sizeof(bf16), stream));
            if (!knorm_in_attn) cudaCheck(cudaMemsetAsync(m.dk, 0, (size_t)N * KVD * sizeof(bf16), stream));
            attention_backward(dq, m.dk, m.dv, m.datt, la.q, la.k, la.v, la.att, la.lse, B, T, H, KV, hd, m.attn_scratch,
                               true, stream, prep);
        } else {
            attention_backward(dq, m.dk, m.dv, m.datt_xsa, la.q, la.k, la.v, la.att, la.lse, B, T, H, KV, hd,
                               m.attn_scratch, false, stream, prep);
        }
        // through gain/RoPE/per-head rmsnorm, in place: dq, dk become the c_q / c_k output gradients
        float *dq_gain = dbp.q_gain;
#ifdef BREAK_QGAIN_HEAD  // a deliberately wrong variant (dev/broken_variants.sh): head h's q_gain gradient lands on h + 1
        dq_gain += 1;
#endif
        if (dq_from_acc)
            qk_norm_rope_gain_backward_from_acc(m.dq, dq_gain, attention_backward_dq_acc(m.attn_scratch, B, T, H, hd, prep.dq_buf),
                                                attention_backward_dq_acc_scale(), nullptr, la.q, la.rstd_q, m.rope_cos, m.rope_sin,
                                                bp.q_gain, B, T, H, hd, rd, false, sc, stream);
        else
            qk_norm_rope_gain_backward(m.dq, dq_gain, m.dq, nullptr, la.q, la.rstd_q, m.rope_cos, m.rope_sin, bp.q_gain, B, T, H, hd,
                                       rd, false, sc, stream);
        if (!knorm_in_attn)
            qk_norm_rope_gain_backward(m.dk, nullptr, m.dk, nullptr, la.k, la.rstd_k, m.rope_cos, m.rope_sin, nullptr, B, T, KV, hd,
                                       rd, false, sc, stream);
        const int ve = layer_ve_index(c, l);
        if (ve >= 0) {
            scalar_scale_backward(m.dve_base, dp.ve_layer_scales[ve], m.dv, m.ve_base, p.ve_layer_scales[ve], (size_t)N * KVD,
                                  !first_ve, sc, stream);
            first_ve = false;
        }
        {  // the weight gradients (accumulated over micro-steps), then dln = dq W_q + dk W_k + dv W_v
            const bf16 *const douts[3] = {m.dq, m.dk, m.dv}, *const ws[3] = {bw.c_q, bw.c_k, bw.c_v};
            float *const dws[3] = {dbp.c_q, dbp.c_k, dbp.c_v};
            const int k[3] = {D, KVD, KVD};
            const bool grouped = qkv_gemm_grouped() && matmul_backward_dinp_grouped_supported(m.dln, douts, ws, k, 3, N, D);
            for (int g = 0; g < 3; g++)
                matmul_backward(grouped ? nullptr : m.dln, dws[g], douts[g], la.ln1, ws[g], N, D, k[g], g > 0, true, stream);
            if (grouped) matmul_backward_dinp_grouped(m.dln, douts, ws, k, 3, N, D, stream);
        }
        // ln1 = s * rmsnorm(x_in), x_in = mix[0] * resid + mix[1] * x0: dres becomes d resid in
        // place; dx0 sums over blocks. A skip layer's resid = prev + skip_weights[i] * enc is
        // recomputed (l >= 1 there): in the fused pass, which also gives the skip's gradients and,
        // when the block's input (layer l - 1's output) feeds a skip too, adds that one's gradient.
        // The fused pass rebuilds ln1 from resid, x0 and rstd1 as the forward computed it (its
        // version 2, the default; RMB_VERSION=1 reads ln1): they must be the very tensors the
        // forward's x_in pass (block_start_forward or resid_mix_rmsnorm_forward) read and wrote.
        const int i = l - nE;
        const bool skip = i >= 0 && i < c.num_skip;
        if (fused_start) {
            ResidMixSkip sk;
            if (skip) {
                sk.enc = m.layers[nE - 1 - i].out;
                sk.skip_w = p.skip_weights + (size_t)i * D;
                sk.denc = m.dskip + (size_t)i * ND;
                sk.dskip_w = dp.skip_weights + (size_t)i * D;
            }
            if (encoder_skip(l - 1)) sk.add = m.dskip + (size_t)(nE - l) * ND;  // written by block 2 nE - l >= l
            rmsnorm_resid_mix_backward(m.dres, m.dx0, dbp.resid_mix, m.dln, la.ln1, la.rstd1, skip ? m.layers[l - 1].out : la.resid,
                                       m.x0, bp.resid_mix, N, D, s, l != L - 1, sc, stream, sk);
            continue;
        }
        if (skip)
            residual_scale_forward(m.xres, m.layers[l - 1].out, p.skip_weights + (size_t)i * D, m.layers[nE - 1 - i].out, N, D,
                                   stream);
        const bf16 *resid = skip ? m.xres : la.resid;  // rows of more than 1024 channels: the unfused launchers
        rmsnorm_backward_from_out(m.dres, m.dln, la.ln1, la.rstd1, N, D, s, true, stream);
        resid_mix_backward(m.dres, m.dx0, dbp.resid_mix, m.dres, resid, m.x0, bp.resid_mix, N, D, false, l != L - 1, sc, stream);
        // the skip add of a decoder block: d prev = dres
        if (skip)
            residual_scale_backward(nullptr, dp.skip_weights + (size_t)i * D, m.dskip + (size_t)i * ND, m.dres,
                                    p.skip_weights + (size_t)i * D, m.layers[nE - 1 - i].out, N, D, false, false, sc, stream);
    }
    // block 0's input was x0 itself
    add_inplace(m.dx0, m.dres, ND, stream);

    // embeddings
    smear_backward(m.dln, dp.smear_gate, m.dx0, m.emb_norm, p.smear_gate, B, T, D, false, sc, stream);
    rmsnorm_backward_from_out(m.dln, m.dln, m.emb_norm, m.rstd0, N, D, 1.f, false, stream);
    embed_sum_backward(dp.tok_emb, m.dbg_proj, dp.bigram_scale, m.dln, m.ids, m.bg_proj, p.bigram_scale, N, D, V, false, sc, stream);
    matmul_backward(m.dbg_emb, dp.bigram_proj, m.dbg_proj, m.bg_emb, w.bigram_proj, N, (int)c.bigram_dim, D, false, true, stream);
    embedding_backward(dp.bigram_embed, m.dbg_emb, m.bigram_idx, N, (int)c.bigram_dim, (int)c.bigram_vocab_size, sc, stream);
    if (c.ve_enabled && !first_ve) {
        scalar_scale_backward(m.dve_proj, dp.ve_scale, m.dve_base, m.ve_proj, p.ve_scale, (size_t)N * KVD, false, sc, stream);
        matmul_backward(m.dve_emb, dp.ve_proj, m.dve_proj, m.ve_emb, w.ve_proj, N, (int)c.ve_dim, KVD, false, true, stream);
        embedding_backward(dp.ve_embed, m.dve_emb, m.ids, N, (int)c.ve_dim, V, sc, stream);
    }
}

// The GPU forward as eval.h's NllFn: per-position losses of a host batch, in eval mode (QAT_OFF,
// as the reference's model.eval()). Synchronous (it copies the losses back). Twin of nll_fn_cpu.
// EVAL_REF_ROUNDING (model.h, logits_rounding) may turn the logits' bf16 rounding off for one call.
// Only the positions [score_from, T) of each row are computed (model_gpu_forward); out holds NaN
// before them.
inline NllFn nll_fn_gpu(ModelGPU &m) {
    return [&m](const int32_t *x, const int32_t *y, int B, int T, bool sliding, int score_from, float *out) {
        const QatMode train_mode = m.qat;
        m.qat = QAT_OFF;
        model_gpu_upload(m, x, y, B, T, 0);
        m.round_logits = logits_rounding(m.config, sliding) != 0;
        m.score_from = score_from;
        model_gpu_forward(m, 1.f, false, false, 0);
        m.score_from = 0;
        m.round_logits = true;
        m.qat = train_mode;
        const int S = T - score_from;
        std::fill(out, out + (size_t)B * T, std::numeric_limits<float>::quiet_NaN());
        cudaCheck(cudaMemcpy2D(out + score_from, T * sizeof(float), m.losses, S * sizeof(float), S * sizeof(float), B,
                               cudaMemcpyDeviceToHost));
    };
}

// The softcapped logits at the last position of one sequence ids[0..T), in eval mode, on the
// host: out (V). For sampling (eval --sample); the twin of model_forward_logits' last row.
inline void model_gpu_last_logits(ModelGPU &m, const int *ids, int T, float *out) {
    const int V = (int)m.config.vocab_size;
    const float cap = (float)m.config.logit_softcap;
    const QatMode train_mode = m.qat;
    m.qat = QAT_OFF;
    model_gpu_upload(m, ids, nullptr, 1, T, 0);
    m.score_from = T - 1;  // only the last position's logits: they are row 0
    model_gpu_forward(m, 1.f, false, false, 0);
    m.score_from = 0;
    m.qat = train_mode;
    std::vector<uint16_t> row(V);  // raw bf16 logits (the softcap is fused into the loss on the GPU)
    cudaCheck(cudaMemcpy(row.data(), m.logits, V * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (int v = 0; v < V; v++) out[v] = cap * std::tanh(bf16_to_f32(row[v]) / cap);
}

// Bytes of device memory the model holds (weights, activations, scratch), for the log.
inline size_t model_gpu_bytes(const ModelGPU &m) { return m.weight_bytes + m.arena.bytes; }
