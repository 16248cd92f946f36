// loss.cuh: the head's softcapped cross-entropy, forward and backward in one pass.
//
// The tied head's GEMM writes logits_raw = x @ tok_emb^T (N, V) in bf16. One kernel then, per row:
//   z = cap * tanh(raw / cap)                      (the softcap, fp32, on the fly)
//   loss[n] = logsumexp(z) - z[target[n]]          (fp32, per position: eval needs them all)
//   raw <- dloss * (softmax(z) - onehot(target)) * (1 - (z/cap)^2)   (bf16, IN PLACE)
// so the gradient of the raw logits, ready for the head's backward GEMMs, replaces them and no
// fp32 (N, V) tensor ever exists. dloss is one number: 1/N for the mean loss, times the caller's
// gradient-accumulation scale. CPU twins: softcap_forward_cpu, crossentropy_forward_cpu,
// crossentropy_backward_cpu, softcap_backward_cpu (model_cpu.h).
//
// One warp per row, CE_WARPS rows per block. With V % 8 == 0 (and a 16-byte aligned buffer) a
// lane reads 8 logits at a time and keeps up to CE_CACHE*8 of them in registers (all of a
// V = 1024 row), so the row is read once and written once; longer rows re-read the rest from
// L2. Other V take a plain scalar path. Both work for any V >= 1.
//
// Precision: the reference rounds the softcapped logits to bf16 before its fp32 cross-entropy
// (the tanh runs on a bf16 tensor). By default we keep z in fp32 (a little more accurate);
// round_bf16 = true rounds z to bf16 as the reference does. A target outside [0, V) gives a NaN
// loss and NaN gradients for its row, so bad data cannot pass silently.
#pragma once

#include "cuda_utils.cuh"  // defines: bf16, cudaCheck, lyr:: vector helpers and warp reductions

constexpr int CE_WARPS = 8;  // rows per block
constexpr int CE_CACHE = 4;  // 8-value vectors per lane kept in registers (V <= 1024 read once)

// cap * tanh(raw / cap) as sign(raw) * cap * (1 - e) / (1 + e), e = exp(-2|raw/cap|): two SFU
// operations, no branch; the absolute error on z is a few 1e-6 (e's rounding near e = 1), far
// below anything the softmax can notice (the raw logits themselves are bf16).
__device__ __forceinline__ float softcap_value(float raw, float cap, float inv_cap, bool round_bf16) {
    const float e = __expf(-2.f * fabsf(raw * inv_cap));
    const float z = cap * copysignf(__fdividef(1.f - e, 1.f + e), raw);
#ifdef BREAK_CE_ROUND  // a deliberately wrong variant (dev/broken_variants.sh): round_bf16 ignored
    return z;
#endif
    return round_bf16 ? lyr::rnd(z) : z;
}

// d loss / d raw of one logit: dloss * (p - onehot) * tanh'
__device__ __forceinline__ float softcap_ce_grad(float z, float m, float inv_s, bool is_target, float inv_cap,
                                                 float dloss) {
    const float p = __expf(z - m) * inv_s;
    const float th = z * inv_cap;
    return dloss * (p - (is_target ? 1.f : 0.f)) * (1.f - th * th);
}

// V % 8 == 0: vectors of 8, the first CE_CACHE*32 of them per row cached in registers
__global__ void __launch_bounds__(CE_WARPS * 32) crossentropy_softcap_vec_kernel(bf16 *logits, float *losses,
                                                                                 const int *targets, int N, int V,
                                                                                 float cap, float dloss, bool backward,
                                                                                 bool round_bf16) {
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * CE_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    bf16 *row = logits + (size_t)n * V;
    const int NV = V / 8;
    const int tgt = targets[n];
    const bool bad = tgt < 0 || tgt >= V;
    const float inv_cap = 1.f / cap;
    // the target's logit, read before anyone writes the row (the __syncwarp below orders it)
    const float raw_t = (lane == 0 && !bad) ? __bfloat162float(row[tgt]) : 0.f;

    // pass 1: z and its max
    float z[CE_CACHE][8];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < CE_CACHE; k++) {
        const int cv = k * 32 + lane;
        if (cv < NV) {
            lyr::load8(z[k], row + cv * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                z[k][j] = softcap_value(z[k][j], cap, inv_cap, round_bf16);
                m = fmaxf(m, z[k][j]);
            }
        }
    }
    for (int cv = CE_CACHE * 32 + lane; cv < NV; cv += 32) {
        float t[8];
        lyr::load8(t, row + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) m = fmaxf(m, softcap_value(t[j], cap, inv_cap, round_bf16));
    }
    m = lyr::warp_max(m);
    // pass 2: the sum of exp(z - max)
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < CE_CACHE; k++) {
        if (k * 32 + lane < NV) {
#pragma unroll
            for (int j = 0; j < 8; j++) s += __expf(z[k][j] - m);
        }
    }
    for (int cv = CE_CACHE * 32 + lane; cv < NV; cv += 32) {
        float t[8];
        lyr::load8(t, row + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) s += __expf(softcap_value(t[j], cap, inv_cap, round_bf16) - m);
    }
    s = lyr::warp_sum(s);
    if (lane == 0) {
        const float zt = softcap_value(raw_t, cap, inv_cap, round_bf16);
        losses[n] = bad ? lyr::nan_value() : m + logf(s) - zt;
    }
    if (!backward) return;
    __syncwarp();  // lane 0 has read row[tgt]: now the row may be overwritten
    // pass 3: the gradient, in place
    const float inv_s = 1.f / s;
#pragma unroll
    for (int k = 0; k < CE_CACHE; k++) {
        const int cv = k * 32 + lane;
        if (cv < NV) {
            float g[8];
#pragma unroll
            for (int j = 0; j < 8; j++)
                g[j] = bad ? lyr::nan_value() : softcap_ce_grad(z[k][j], m, inv_s, cv * 8 + j == tgt, inv_cap, dloss);
            lyr::store8(row + cv * 8, g);
        }
    }
    for (int cv = CE_CACHE * 32 + lane; cv < NV; cv += 32) {
        float t[8];
        lyr::load8(t, row + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float zz = softcap_value(t[j], cap, inv_cap, round_bf16);
            t[j] = bad ? lyr::nan_value() : softcap_ce_grad(zz, m, inv_s, cv * 8 + j == tgt, inv_cap, dloss);
        }
        lyr::store8(row + cv * 8, t);
    }
}

// any V: one value at a time, three reads of the row
__global__ void __launch_bounds__(CE_WARPS * 32) crossentropy_softcap_scalar_kernel(bf16 *logits, float *losses,
                                                                                    const int *targets, int N, int V,
                                                                                    float cap, float dloss,
                                                                                    bool backward, bool round_bf16) {
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * CE_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    bf16 *row = logits + (size_t)n * V;
    const int tgt = targets[n];
    const bool bad = tgt < 0 || tgt >= V;
    const float inv_cap = 1.f / cap;
    const float raw_t = (lane == 0 && !bad) ? __bfloat162float(row[tgt]) : 0.f;
    float m = -INFINITY;
    for (int i = lane; i < V; i += 32) m = fmaxf(m, softcap_value(__bfloat162float(row[i]), cap, inv_cap, round_bf16));
    m = lyr::warp_max(m);
    float s = 0.f;
    for (int i = lane; i < V; i += 32) s += __expf(softcap_value(__bfloat162float(row[i]), cap, inv_cap, round_bf16) - m);
    s = lyr::warp_sum(s);
    if (lane == 0) losses[n] = bad ? lyr::nan_value() : m + logf(s) - softcap_value(raw_t, cap, inv_cap, round_bf16);
    if (!backward) return;
    __syncwarp();
    const float inv_s = 1.f / s;
    for (int i = lane; i < V; i += 32) {
        const float z = softcap_value(__bfloat162float(row[i]), cap, inv_cap, round_bf16);
        const float g = bad ? lyr::nan_value() : softcap_ce_grad(z, m, inv_s, i == tgt, inv_cap, dloss);
        row[i] = __float2bfloat16(g);
    }
}

// out[0] (+)= scale * sum(losses[0..N)), one block, fixed order (e.g. scale = 1/N: the mean loss)
__global__ void __launch_bounds__(1024) loss_sum_kernel(float *out, const float *losses, int N, float scale,
                                                        bool accumulate) {
    __shared__ float sh[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
    s = lyr::block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.f) + scale * s;
}

// ----------------------------------------------------------------------------
// launchers

// logits (N, V) bf16: the raw head output; with backward, replaced by d loss / d raw (times
// dloss). losses (N) fp32: the per-position loss. targets (N) int32. cap: the logit softcap (30).
inline void crossentropy_softcap_fused(bf16 *logits, float *losses, const int *targets, int N, int V, float cap,
                                       float dloss, bool backward, bool round_bf16, cudaStream_t stream) {
    ProfScope prof_(PROF_LOSS, stream);
    if (V < 1) fatal_config("loss.cuh: crossentropy_softcap_fused: V=%d must be >= 1", V);
    if (!(cap > 0.f)) fatal_config("loss.cuh: crossentropy_softcap_fused: softcap %g must be positive", cap);
    if (N <= 0) return;
    const int grid = ceil_div(N, CE_WARPS);
    if (V % 8 == 0 && ((uintptr_t)logits & 15) == 0)
        crossentropy_softcap_vec_kernel<<<grid, CE_WARPS * 32, 0, stream>>>(logits, losses, targets, N, V, cap, dloss,
                                                                           backward, round_bf16);
    else
        crossentropy_softcap_scalar_kernel<<<grid, CE_WARPS * 32, 0, stream>>>(logits, losses, targets, N, V, cap, dloss,
                                                                              backward, round_bf16);
    cudaCheckLaunch();
}

// out[0] (+)= scale * sum of the N per-position losses (deterministic)
inline void loss_sum(float *out, const float *losses, int N, float scale, bool accumulate, cudaStream_t stream) {
    ProfScope prof_(PROF_LOSS, stream);
    if (N < 0) fatal_config("loss.cuh: loss_sum: N=%d must be >= 0", N);
    loss_sum_kernel<<<1, 1024, 0, stream>>>(out, losses, N, scale, accumulate);
    cudaCheckLaunch();
}
