// optim.cuh: the optimizer on the GPU, the twin of optim.h (schedules stay there: they are host
// functions of the step and the clock). Buffers are laid out like the flat parameter buffer of the
// tensor list (tensors.h): params, grads, the Muon momentum and the Adam moments all share the
// offsets, as on the CPU.
//
//   clip_grad_norm      global L2 norm of all gradients: deterministic two-pass reduction (fixed
//                       grid, fp64 partial sums, fixed-order final sum, no atomics); the clip
//                       coefficient min(1, max_norm / (norm + 1e-6)) stays on the device and is
//                       either applied in place or handed to optimizer_step (fused: no extra pass)
//   optimizer_step      Muon for OPT_MUON tensors, AdamW for the others (twin of optimizer_step_cpu)
//     Muon, per group of same-shape matrices (all the c_q's together, all the fc's, ...):
//       muon_momentum   buf = mu*buf + g; g' = g + mu*buf (nesterov); X = bf16(g') packed contiguously
//       newton_schulz   X /= |X|_F + 1e-7; 5 x { A = X X^T; B = b*A + c*A@A; X = a*X + B@X }, batched
//                       bf16 GEMMs with fp32 accumulation (matmul.cuh); tall matrices use the
//                       transposed algebra (A = X^T X, X = a*X + X B^T) instead of a transpose copy
//       muon_update     u = bf16(X * sqrt(max(1, rows/cols))); p = p*(1 - lr*wd) - lr*u (fp32 master)
//     AdamW, fused: one kernel over a table of chunks of every Adam tensor, fp32 state, torch's
//       bias corrections: p = p*(1 - lr*wd) - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
//   ema_update          e = d*e + (1-d)*p over the whole flat buffer
// (The bf16 weights the GEMMs read, and their QAT fake quantization, belong to the model:
// layers.cuh's params_to_bf16 / fake_quant, refreshed by model_gpu.cuh.)
//
// Precision, where it follows the reference (train_gpt.py) rather than optim.h's fp32/fp64 loops:
//   - Newton-Schulz runs in bf16 as the reference's: X = bf16(G); the Frobenius norm is summed in
//     fp32, rounded to bf16, + 1e-7 in bf16, and X is divided by it in bf16. Each GEMM rounds its
//     output to bf16 (twice where cuBLASLt rounds A@B before adding beta*C, see matmul.cuh); the
//     reference rounds a few more intermediates (c*A, b*A, a*X) on their own.
//   - The Muon update is scaled in bf16 (the reference keeps updates in a bf16 buffer).
//   - The elementwise optimizer math is fp32 (torch's opmath) where optim.h uses double.
// dev/optim.cu checks all of it against optim.h (and layers.cuh's params_to_bf16 / fake_quant
// against model_cpu.h's fake_quant_cpu).
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda_utils.cuh"
#include "matmul.cuh"
#include "optim.h"

// ----------------------------------------------------------------------------
// tile sizes and grids

constexpr int OPT_BLOCK = 256;            // threads of every elementwise optimizer kernel
constexpr int NORM_BLOCKS = 1024;         // fixed grid of the global norm: same partial sums on every GPU
constexpr int ADAM_CHUNK = 1024;          // elements of one Adam block (a tensor is cut into chunks)
constexpr int NS_ELEMS_PER_BLOCK = 8192;  // Frobenius-norm partials: one block per this many elements
constexpr int NS_MAX_BLOCKS = 64;         //   ... at most this many per matrix
static_assert(OPT_BLOCK % 32 == 0 && OPT_BLOCK <= 1024, "block size must be whole warps");
static_assert(ADAM_CHUNK % OPT_BLOCK == 0, "an Adam chunk is a whole number of block strides");

// Newton-Schulz quintic coefficients (the reference's)
constexpr float NS_A = 3.4445f, NS_B = -4.7750f, NS_C = 2.0315f;
constexpr float NS_EPS = 1e-7f;

// ----------------------------------------------------------------------------
// device helpers

// Sum over the block in a fixed tree order (deterministic). The result is valid in thread 0.
// blockDim.x must be a multiple of 32. Safe to call several times in a kernel.
template <typename T>
__device__ T opt_block_sum(T v) {
    __shared__ T warp_sums[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? warp_sums[lane] : (T)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    }
    return v;
}

// ----------------------------------------------------------------------------
// global gradient norm and clipping

// partials[block] = sum of g^2 over this block's grid-stride share, in fp64. VEC: float4 loads
// (g 16-byte aligned), the n % 4 tail element-wise.
template <bool VEC>
__global__ void grad_norm_partials_kernel(double *partials, const float *__restrict__ g, size_t n) {
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    double s = 0;
    size_t start = 0;
    if (VEC) {
        // four independent 16-byte loads in flight per thread, then the remainder
        const size_t n4 = n / 4;
        const float4 *g4 = reinterpret_cast<const float4 *>(g);
        size_t i = tid;
        for (; i + 3 * stride < n4; i += 4 * stride) {
            const float4 a = g4[i], b = g4[i + stride], c = g4[i + 2 * stride], d = g4[i + 3 * stride];
            s += (double)a.x * a.x + (double)a.y * a.y + (double)a.z * a.z + (double)a.w * a.w;
            s += (double)b.x * b.x + (double)b.y * b.y + (double)b.z * b.z + (double)b.w * b.w;
            s += (double)c.x * c.x + (double)c.y * c.y + (double)c.z * c.z + (double)c.w * c.w;
            s += (double)d.x * d.x + (double)d.y * d.y + (double)d.z * d.z + (double)d.w * d.w;
        }
        for (; i < n4; i += stride) {
            const float4 v = g4[i];
            s += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
        }
        start = n4 * 4;
    }
    for (size_t i = start + tid; i < n; i += stride) s += (double)g[i] * g[i];
    s = opt_block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One block: norm = sqrt(sum of the partials), coef = the clip factor (1 when not clipping).
__global__ void grad_norm_finish_kernel(double *norm, float *coef, const double *partials, int n_partials, double max_norm) {
    double s = 0;
    for (int i = threadIdx.x; i < n_partials; i += blockDim.x) s += partials[i];
    s = opt_block_sum(s);
    if (threadIdx.x == 0) {
        double nrm = sqrt(s);
        *norm = nrm;
        double c = max_norm > 0 ? max_norm / (nrm + 1e-6) : 1.0;  // torch's clip_grad_norm_
        *coef = c < 1.0 ? (float)c : 1.f;
    }
}

// g *= coef, skipped entirely (no write pass) when coef is 1.
template <bool VEC>
__global__ void grad_scale_kernel(float *__restrict__ g, size_t n, const float *coef) {
    const float c = *coef;
    if (c >= 1.f) return;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t start = 0;
    if (VEC) {
        const size_t n4 = n / 4;
        for (size_t i = tid; i < n4; i += stride) {
            float4 v = reinterpret_cast<float4 *>(g)[i];
            v.x *= c; v.y *= c; v.z *= c; v.w *= c;
            reinterpret_cast<float4 *>(g)[i] = v;
        }
        start = n4 * 4;
    }
    for (size_t i = start + tid; i < n; i += stride) g[i] *= c;
}

// ----------------------------------------------------------------------------
// Muon: momentum, Newton-Schulz, update

// For matrix j = blockIdx.y of a group (at offsets[j] in the flat buffers, numel elements each):
// buf = mu*buf + g; X[j] = bf16(g + mu*buf). grad_scale (device scalar, may be null): the clip
// coefficient, applied to g first (the fused form of clip_grad_norm's in-place scaling).
__global__ void muon_momentum_kernel(bf16 *__restrict__ X, float *__restrict__ buf, const float *__restrict__ grads,
                                     const size_t *offsets, size_t numel, float mu, const float *grad_scale) {
    const size_t off = offsets[blockIdx.y];
    const float gs = grad_scale ? *grad_scale : 1.f;
    bf16 *x = X + (size_t)blockIdx.y * numel;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (size_t)gridDim.x * blockDim.x) {
        const float g = grads[off + i] * gs;
        const float b = fmaf(mu, buf[off + i], g);
        buf[off + i] = b;
        x[i] = __float2bfloat16(fmaf(mu, b, g));  // nesterov
    }
}

// partials[j * gridDim.x + block] = sum of X[j]^2 over this block's share (fp32)
__global__ void ns_sumsq_kernel(float *partials, const bf16 *__restrict__ X, size_t numel) {
    const bf16 *x = X + (size_t)blockIdx.y * numel;
    float s = 0.f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __bfloat162float(x[i]);
        s = fmaf(v, v, s);
    }
    s = opt_block_sum(s);
    if (threadIdx.x == 0) partials[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

// X[j] = bf16(X[j] / bf16(bf16(|X[j]|_F) + eps)), as the reference's `X /= X.norm() + eps` on a
// bf16 tensor. Every block re-sums its matrix's partials in the same order (no extra launch).
__global__ void ns_normalize_kernel(bf16 *__restrict__ X, const float *partials, size_t numel) {
    __shared__ float denom_s;
    const float *pp = partials + (size_t)blockIdx.y * gridDim.x;
    float s = 0.f;
    for (int i = threadIdx.x; i < (int)gridDim.x; i += blockDim.x) s += pp[i];
    s = opt_block_sum(s);
    if (threadIdx.x == 0) denom_s = bf16_round(bf16_round(sqrtf(s)) + NS_EPS);
    __syncthreads();
    const float den = denom_s;
    bf16 *x = X + (size_t)blockIdx.y * numel;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __float2bfloat16(__fdiv_rn(__bfloat162float(x[i]), den));
}

// For matrix j = blockIdx.y: u = bf16(U[j] * scale); p = p * decay - lr * u (fp32 master weights)
__global__ void muon_update_kernel(float *__restrict__ params, const bf16 *__restrict__ U, const size_t *offsets, size_t numel,
                                   float scale, float decay, float lr) {
    float *p = params + offsets[blockIdx.y];
    const bf16 *u = U + (size_t)blockIdx.y * numel;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (size_t)gridDim.x * blockDim.x) {
        const float ui = bf16_round(__bfloat162float(u[i]) * scale);
        p[i] = fmaf(-lr, ui, p[i] * decay);
    }
}

// ----------------------------------------------------------------------------
// AdamW

// A run of at most ADAM_CHUNK elements of one Adam tensor; group 0 = embeddings
// (TIED_EMBED_LR), 1 = scalars and control tensors (SCALAR_LR).
struct AdamChunk {
    size_t offset;
    int n, group;
};
// Per-step constants, computed on the host in double and passed by value.
struct AdamHyper {
    float step_size[2];  // lr / (1 - beta1^t), per group
    float decay[2];      // 1 - lr * wd, per group
    float b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps;
};

__global__ void adamw_kernel(float *__restrict__ params, float *__restrict__ m, float *__restrict__ v,
                             const float *__restrict__ grads, const AdamChunk *chunks, AdamHyper h, const float *grad_scale) {
    const AdamChunk ch = chunks[blockIdx.x];
    const float gs = grad_scale ? *grad_scale : 1.f;
    const float step = h.step_size[ch.group], decay = h.decay[ch.group];
    for (int i = threadIdx.x; i < ch.n; i += blockDim.x) {
        const size_t k = ch.offset + i;
        const float g = grads[k] * gs;
        const float mi = fmaf(h.b1, m[k], h.one_minus_b1 * g);
        const float vi = fmaf(h.b2, v[k], h.one_minus_b2 * g * g);
        m[k] = mi;
        v[k] = vi;
        const float denom = sqrtf(vi) / h.sqrt_bc2 + h.eps;
        params[k] = params[k] * decay - step * mi / denom;
    }
}

// ----------------------------------------------------------------------------
// EMA, bf16 copy, fake quantization

template <bool VEC>
__global__ void ema_kernel(float *__restrict__ ema, const float *__restrict__ p, size_t n, float d, float one_minus_d) {
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t start = 0;
    if (VEC) {
        const size_t n4 = n / 4;
        for (size_t i = tid; i < n4; i += stride) {
            float4 e = reinterpret_cast<float4 *>(ema)[i];
            const float4 q = reinterpret_cast<const float4 *>(p)[i];
            e.x = fmaf(d, e.x, one_minus_d * q.x);
            e.y = fmaf(d, e.y, one_minus_d * q.y);
            e.z = fmaf(d, e.z, one_minus_d * q.z);
            e.w = fmaf(d, e.w, one_minus_d * q.w);
            reinterpret_cast<float4 *>(ema)[i] = e;
        }
        start = n4 * 4;
    }
    for (size_t i = start + tid; i < n; i += stride) ema[i] = fmaf(d, ema[i], one_minus_d * p[i]);
}

// ----------------------------------------------------------------------------
// launchers: the small pieces

// Global L2 norm of grads (n elements) into *d_norm (fp64) and the clip coefficient into *d_coef.
// d_partials holds NORM_BLOCKS doubles. No host synchronization.
inline void grad_norm(double *d_norm, float *d_coef, double *d_partials, const float *grads, size_t n, double max_norm,
                      cudaStream_t stream) {
    if (n > 0 && !grads) fatal("grad_norm: null gradient pointer");
    if (aligned16(grads))
        grad_norm_partials_kernel<true><<<NORM_BLOCKS, OPT_BLOCK, 0, stream>>>(d_partials, grads, n);
    else
        grad_norm_partials_kernel<false><<<NORM_BLOCKS, OPT_BLOCK, 0, stream>>>(d_partials, grads, n);
    cudaCheckLaunch();
    grad_norm_finish_kernel<<<1, 1024, 0, stream>>>(d_norm, d_coef, d_partials, NORM_BLOCKS, max_norm);
    cudaCheckLaunch();
}

// grads *= *d_coef (a device scalar); no write pass when it is 1.
inline void grad_scale(float *grads, size_t n, const float *d_coef, cudaStream_t stream) {
    if (n == 0) return;
    const int grid = grid_blocks(n / 4 + 1, OPT_BLOCK * 4);
    if (aligned16(grads)) grad_scale_kernel<true><<<grid, OPT_BLOCK, 0, stream>>>(grads, n, d_coef);
    else grad_scale_kernel<false><<<grid, OPT_BLOCK, 0, stream>>>(grads, n, d_coef);
    cudaCheckLaunch();
}

// Momentum + nesterov for `count` same-size matrices at d_offsets[0..count) into X (count, numel).
inline void muon_momentum(bf16 *X, float *buf, const float *grads, const size_t *d_offsets, int count, size_t numel, float mu,
                          const float *grad_scale, cudaStream_t stream) {
    if (count <= 0 || count > 65535 || numel == 0) fatal("muon_momentum: bad group (count %d, numel %zu)", count, numel);
    dim3 grid(grid_blocks(numel, OPT_BLOCK), count);  // one element per thread: many loads in flight
    muon_momentum_kernel<<<grid, OPT_BLOCK, 0, stream>>>(X, buf, grads, d_offsets, numel, mu, grad_scale);
    cudaCheckLaunch();
}

inline void muon_update(float *params, const bf16 *U, const size_t *d_offsets, int count, size_t numel, float scale, float decay,
                        float lr, cudaStream_t stream) {
    if (count <= 0 || count > 65535 || numel == 0) fatal("muon_update: bad group (count %d, numel %zu)", count, numel);
    dim3 grid(grid_blocks(numel, OPT_BLOCK), count);
    muon_update_kernel<<<grid, OPT_BLOCK, 0, stream>>>(params, U, d_offsets, numel, scale, decay, lr);
    cudaCheckLaunch();
}

// Scratch of newton_schulz: X holds the input (batch, rows, cols) bf16 contiguous; Y the other
// ping-pong buffer; A, B the (batch, m, m) Gram matrices, m = min(rows, cols); partials the norms.
struct NSWorkspace {
    bf16 *X = nullptr, *Y = nullptr, *A = nullptr, *B = nullptr;
    float *partials = nullptr;
    size_t cap_x = 0, cap_a = 0, cap_partials = 0;  // capacities in elements
};
inline int ns_norm_blocks(size_t numel) { return (int)std::min<size_t>((numel + NS_ELEMS_PER_BLOCK - 1) / NS_ELEMS_PER_BLOCK, NS_MAX_BLOCKS); }
inline void ns_workspace_alloc(NSWorkspace &w, size_t max_x, size_t max_a, int max_batch) {
    w.cap_x = std::max<size_t>(max_x, 1);
    w.cap_a = std::max<size_t>(max_a, 1);
    w.cap_partials = (size_t)std::max(max_batch, 1) * NS_MAX_BLOCKS;
    cudaCheck(cudaMalloc(&w.X, w.cap_x * sizeof(bf16)));
    cudaCheck(cudaMalloc(&w.Y, w.cap_x * sizeof(bf16)));
    cudaCheck(cudaMalloc(&w.A, w.cap_a * sizeof(bf16)));
    cudaCheck(cudaMalloc(&w.B, w.cap_a * sizeof(bf16)));
    cudaCheck(cudaMalloc(&w.partials, w.cap_partials * sizeof(float)));
}
inline void ns_workspace_free(NSWorkspace &w) {
    cudaFreeCheck(w.X); cudaFreeCheck(w.Y); cudaFreeCheck(w.A); cudaFreeCheck(w.B); cudaFreeCheck(w.partials);
    w.cap_x = w.cap_a = w.cap_partials = 0;
}

// Newton-Schulz orthogonalization of `batch` matrices (rows, cols) held in w.X (bf16, contiguous),
// the GPU twin of newton_schulz_cpu (bf16, as the reference). Returns the buffer holding the
// result (w.X or w.Y: the iterations ping-pong between them).
inline const bf16 *newton_schulz(NSWorkspace &w, int batch, int rows, int cols, int steps, cudaStream_t stream) {
    if (batch <= 0 || rows <= 0 || cols <= 0 || steps < 0 || batch > 65535)
        fatal("newton_schulz: bad arguments (batch %d, rows %d, cols %d, steps %d)", batch, rows, cols, steps);
    const bool tall = rows > cols;
    const long long m = tall ? cols : rows, numel = (long long)rows * cols;
    if ((size_t)(batch * numel) > w.cap_x || (size_t)(batch * m * m) > w.cap_a || (size_t)batch * NS_MAX_BLOCKS > w.cap_partials)
        fatal("newton_schulz: workspace too small for %d matrices of %d x %d", batch, rows, cols);
    // X = X / (|X|_F + eps), per matrix
    dim3 grid(ns_norm_blocks(numel), batch);
    ns_sumsq_kernel<<<grid, OPT_BLOCK, 0, stream>>>(w.partials, w.X, numel);
    cudaCheckLaunch();
    ns_normalize_kernel<<<grid, OPT_BLOCK, 0, stream>>>(w.X, w.partials, numel);
    cudaCheckLaunch();
    bf16 *X = w.X, *Y = w.Y;
    const long long mm = m * m;
    for (int it = 0; it < steps; it++) {
        if (!tall) {
            // wide (m = rows <= cols): A = X X^T (m, m); B = c*A@A + b*A; Y = B@X + a*X
            gemm(w.A, CUDA_R_16BF, nullptr, X, false, X, true, rows, rows, cols, 1.f, 0.f, batch, numel, numel, mm, GEMM_EPI_NONE, stream);
            gemm(w.B, CUDA_R_16BF, w.A, w.A, false, w.A, false, rows, rows, rows, NS_C, NS_B, batch, mm, mm, mm, GEMM_EPI_NONE, stream);
            gemm(Y, CUDA_R_16BF, X, w.B, false, X, false, rows, cols, rows, 1.f, NS_A, batch, mm, numel, numel, GEMM_EPI_NONE, stream);
        } else {
            // tall: the wide algebra on X^T without transposing. A = X^T X (m = cols); B as above;
            // (B X^T)^T = X B^T, so Y = X@B^T + a*X
            gemm(w.A, CUDA_R_16BF, nullptr, X, true, X, false, cols, cols, rows, 1.f, 0.f, batch, numel, numel, mm, GEMM_EPI_NONE, stream);
            gemm(w.B, CUDA_R_16BF, w.A, w.A, false, w.A, false, cols, cols, cols, NS_C, NS_B, batch, mm, mm, mm, GEMM_EPI_NONE, stream);
            gemm(Y, CUDA_R_16BF, X, X, false, w.B, true, rows, cols, cols, 1.f, NS_A, batch, numel, mm, numel, GEMM_EPI_NONE, stream);
        }
        std::swap(X, Y);
    }
    return X;
}

// FLOPs of newton_schulz on one (rows, cols) matrix (for benchmark rows)
inline double newton_schulz_flops(int rows, int cols, int steps) {
    double m = std::min(rows, cols), n = std::max(rows, cols);
    return steps * (4.0 * m * m * n + 2.0 * m * m * m);
}

// Fused AdamW over a device table of chunks.
inline void adamw_update(float *params, float *m, float *v, const float *grads, const AdamChunk *d_chunks, int n_chunks,
                         const AdamHyper &h, const float *grad_scale, cudaStream_t stream) {
    if (n_chunks <= 0) return;
    adamw_kernel<<<n_chunks, OPT_BLOCK, 0, stream>>>(params, m, v, grads, d_chunks, h, grad_scale);
    cudaCheckLaunch();
}

// e = decay * e + (1 - decay) * p over n elements (twin of ema_update_cpu; decay = optim.h's
// ema_decay_at(step), computed on the host)
inline void ema_update(float *ema, const float *params, size_t n, double decay, cudaStream_t stream) {
    ProfScope prof_(PROF_OPTIM, stream);
    if (n == 0) return;
    const int grid = grid_blocks(n / 4 + 1, OPT_BLOCK * 2);
    const float d = (float)decay, omd = (float)(1.0 - decay);
    if (aligned16(ema) && aligned16(params)) ema_kernel<true><<<grid, OPT_BLOCK, 0, stream>>>(ema, params, n, d, omd);
    else ema_kernel<false><<<grid, OPT_BLOCK, 0, stream>>>(ema, params, n, d, omd);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// the optimizer: state, plan and one step

// Same-shape Muon matrices, orthogonalized together as one batch.
struct MuonGroup {
    int rows = 0, cols = 0, count = 0;
    std::vector<size_t> offsets;  // host copy
    size_t *d_offsets = nullptr;  // (count) offsets into the flat buffers
};

struct OptimizerGPU {
    size_t n = 0;                    // parameters (elements) in the flat buffers
    float *muon_buf = nullptr;       // (n) Muon momentum (Muon tensors only used), as OptimState
    float *adam_m = nullptr;         // (n) AdamW first moment (Adam tensors only used)
    float *adam_v = nullptr;         // (n) AdamW second moment
    long adam_t = 0;                 // AdamW step count (host: it only feeds the bias corrections)
    std::vector<MuonGroup> groups;   // Muon tensors by shape, in tensor-list order of first appearance
    AdamChunk *d_adam_chunks = nullptr;
    int n_adam_chunks = 0;
    NSWorkspace ns;
    double *d_norm_partials = nullptr;  // (NORM_BLOCKS)
    double *d_grad_norm = nullptr;      // (1) the last global gradient norm (copy it out to log it)
    float *d_clip_coef = nullptr;       // (1) the last clip coefficient (pass as grad_scale to fuse)
};

template <typename T>
inline T *opt_upload(const std::vector<T> &v) {
    T *d = nullptr;
    if (v.empty()) return nullptr;
    cudaCheck(cudaMalloc(&d, v.size() * sizeof(T)));
    cudaCheck(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

// Build the plan from the tensor list and allocate zeroed state.
inline void optimizer_gpu_create(OptimizerGPU &o, const Config &c, const TensorList &tl) {
    o = OptimizerGPU();
    o.n = tl.flat;
    std::vector<AdamChunk> chunks;
    for (const TensorSpec &s : tl.specs) {
        if (s.group == OPT_MUON) {
            if (s.shape.size() != 2) fatal("optimizer: Muon tensor %s is not 2-D", s.name.c_str());
            int rows = (int)s.shape[0], cols = (int)s.shape[1];
            MuonGroup *g = nullptr;
            for (MuonGroup &x : o.groups) if (x.rows == rows && x.cols == cols) g = &x;
            if (!g) { o.groups.emplace_back(); g = &o.groups.back(); g->rows = rows; g->cols = cols; }
            g->offsets.push_back(s.offset);
            g->count++;
        } else {
            for (size_t i = 0; i < s.numel; i += ADAM_CHUNK)
                chunks.push_back(AdamChunk{s.offset + i, (int)std::min<size_t>(ADAM_CHUNK, s.numel - i), s.group == OPT_ADAM_EMBED ? 0 : 1});
        }
    }
    size_t max_x = 0, max_a = 0;
    int max_batch = 0;
    for (MuonGroup &g : o.groups) {
        g.d_offsets = opt_upload(g.offsets);
        size_t m = std::min(g.rows, g.cols);
        max_x = std::max(max_x, (size_t)g.count * g.rows * g.cols);
        max_a = std::max(max_a, (size_t)g.count * m * m);
        max_batch = std::max(max_batch, g.count);
    }
    if (max_batch > 65535) fatal("optimizer: %d same-shape Muon matrices is more than one launch handles", max_batch);
    ns_workspace_alloc(o.ns, max_x, max_a, max_batch);
    o.d_adam_chunks = opt_upload(chunks);
    o.n_adam_chunks = (int)chunks.size();
    cudaCheck(cudaMalloc(&o.muon_buf, std::max<size_t>(o.n, 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&o.adam_m, std::max<size_t>(o.n, 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&o.adam_v, std::max<size_t>(o.n, 1) * sizeof(float)));
    cudaCheck(cudaMemset(o.muon_buf, 0, o.n * sizeof(float)));
    cudaCheck(cudaMemset(o.adam_m, 0, o.n * sizeof(float)));
    cudaCheck(cudaMemset(o.adam_v, 0, o.n * sizeof(float)));
    cudaCheck(cudaMalloc(&o.d_norm_partials, NORM_BLOCKS * sizeof(double)));
    cudaCheck(cudaMalloc(&o.d_grad_norm, sizeof(double)));
    cudaCheck(cudaMalloc(&o.d_clip_coef, sizeof(float)));
    cudaCheck(cudaMemset(o.d_grad_norm, 0, sizeof(double)));
    const float one = 1.f;
    cudaCheck(cudaMemcpy(o.d_clip_coef, &one, sizeof one, cudaMemcpyHostToDevice));
}

inline void optimizer_gpu_free(OptimizerGPU &o) {
    for (MuonGroup &g : o.groups) cudaFreeCheck(g.d_offsets);
    ns_workspace_free(o.ns);
    cudaFreeCheck(o.d_adam_chunks);
    cudaFreeCheck(o.muon_buf);
    cudaFreeCheck(o.adam_m);
    cudaFreeCheck(o.adam_v);
    cudaFreeCheck(o.d_norm_partials);
    cudaFreeCheck(o.d_grad_norm);
    cudaFreeCheck(o.d_clip_coef);
    o = OptimizerGPU();
}

// The state to and from the CPU's OptimState (checkpoints, and the dev check).
inline void optim_state_upload(OptimizerGPU &o, const OptimState &st) {
    if (st.muon_buf.size() != o.n || st.adam_m.size() != o.n || st.adam_v.size() != o.n)
        fatal("optimizer: state has %zu elements, the model %zu", st.muon_buf.size(), o.n);
    cudaCheck(cudaMemcpy(o.muon_buf, st.muon_buf.data(), o.n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(o.adam_m, st.adam_m.data(), o.n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(o.adam_v, st.adam_v.data(), o.n * sizeof(float), cudaMemcpyHostToDevice));
    o.adam_t = st.adam_t;
}
inline void optim_state_download(const OptimizerGPU &o, OptimState &st) {
    st.init(o.n);
    cudaCheck(cudaMemcpy(st.muon_buf.data(), o.muon_buf, o.n * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(st.adam_m.data(), o.adam_m, o.n * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(st.adam_v.data(), o.adam_v, o.n * sizeof(float), cudaMemcpyDeviceToHost));
    st.adam_t = o.adam_t;
}

// Twin of clip_grad_norm_cpu: the global norm into o.d_grad_norm, the coefficient into
// o.d_clip_coef, and, when scale_now, grads scaled in place. With scale_now false pass
// o.d_clip_coef as optimizer_step's grad_scale instead (same numbers, one pass fewer).
inline void clip_grad_norm(OptimizerGPU &o, float *grads, double max_norm, bool scale_now, cudaStream_t stream) {
    ProfScope prof_(PROF_OPTIM, stream);
    grad_norm(o.d_grad_norm, o.d_clip_coef, o.d_norm_partials, grads, o.n, max_norm, stream);
    if (scale_now) grad_scale(grads, o.n, o.d_clip_coef, stream);
}

// Twin of optimizer_step_cpu: Muon for the OPT_MUON tensors, AdamW for the others, at base LR x
// lr_mult. grads is read only (the CPU version overwrites it with Muon's update). grad_scale: a
// device scalar multiplying every gradient first (the clip coefficient), or null.
inline void optimizer_step(OptimizerGPU &o, const Config &c, float *params, const float *grads, double lr_mult, double muon_mu,
                           const float *grad_scale, cudaStream_t stream) {
    ProfScope prof_(PROF_OPTIM, stream);
    o.adam_t++;
    // Muon, group by group: momentum -> Newton-Schulz (batched) -> update
    const double lr_muon = group_lr(c, OPT_MUON) * lr_mult;
    float decay_muon = (float)(1.0 - lr_muon * c.muon_wd);
#ifdef BREAK_MUON_WD  // a deliberately wrong variant (dev/broken_variants.sh): Muon ignores MUON_WD
    decay_muon = 1.f;
#endif
    for (const MuonGroup &g : o.groups) {
        const size_t numel = (size_t)g.rows * g.cols;
        muon_momentum(o.ns.X, o.muon_buf, grads, g.d_offsets, g.count, numel, (float)muon_mu, grad_scale, stream);
        const bf16 *U = newton_schulz(o.ns, g.count, g.rows, g.cols, (int)c.muon_backend_steps, stream);
        const float scale = (float)std::sqrt(std::max(1.0, (double)g.rows / g.cols));
        muon_update(params, U, g.d_offsets, g.count, numel, scale, decay_muon, (float)lr_muon, stream);
    }
    // AdamW, every other tensor in one launch
    AdamHyper h;
    const double b1 = c.beta1, b2 = c.beta2;
    const double bc1 = 1.0 - std::pow(b1, (double)o.adam_t), bc2 = 1.0 - std::pow(b2, (double)o.adam_t);
    const double lr_g[2] = {group_lr(c, OPT_ADAM_EMBED) * lr_mult, group_lr(c, OPT_ADAM_SCALAR) * lr_mult};
    for (int k = 0; k < 2; k++) {
        h.step_size[k] = (float)(lr_g[k] / bc1);
        h.decay[k] = (float)(1.0 - lr_g[k] * c.adam_wd);
    }
    h.b1 = (float)b1; h.one_minus_b1 = (float)(1.0 - b1);
    h.b2 = (float)b2; h.one_minus_b2 = (float)(1.0 - b2);
    h.sqrt_bc2 = (float)std::sqrt(bc2);
    h.eps = (float)c.adam_eps;
    adamw_update(params, o.adam_m, o.adam_v, grads, o.d_adam_chunks, o.n_adam_chunks, h, grad_scale, stream);
}
