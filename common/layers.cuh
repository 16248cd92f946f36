// layers.cuh: the memory-bound layers of the model on the GPU, forward and backward. Each launcher
// is the twin of a *_cpu function in model_cpu.h (same name without _cpu, same layouts). The file
// is one section per op family, in this order, each reading top to bottom: an opening comment
// naming its CPU twin, its kernels, then its launchers:
//
//   scalar_scale_forward/backward, add_inplace                     VE scalar scales; dst += src
//   bigram_hash, embedding_forward/backward, embed_sum_forward/backward   the input embeddings
//   rmsnorm_forward/backward(_from_out)                            no weight, optional scale
//   smear_forward/backward                                         SmearGate
//   resid_mix_forward/backward                                     x_in = mix0*x + mix1*x0
//   residual_scale_forward/backward                                x + scale*y: attn/mlp scales, U-Net skips
//   fold_scale_transpose, fold_scale_grad                          those scales folded into the proj weights
//   resid_mix_rmsnorm_forward, residual_scale_rmsnorm_forward      those two fused with the next rmsnorm
//   block_start_forward                                            a block's output, the next one's skip, mix and rmsnorm
//   rmsnorm_resid_mix_backward                                     the backward of resid_mix + rmsnorm in one pass
//   relu2_forward/backward(_from_out)                              relu(x)^2
//   rope_tables, qk_norm_rope_gain_forward/backward                per-head rmsnorm + partial RoPE + q_gain
//                                                                  (the backward from xn or from out)
//   qk_rope_gain_forward                                           the same without the norm (out from xn)
//   params_to_bf16, fake_quant, weights_to_bf16                    the bf16 weights the kernels read (late QAT)
//
// (Before them: what several families share, the partial-sum finalizers and the launchers' checks.
// The 8-wide bf16 vector helpers and warp reductions are cuda_utils.cuh's, shared with loss.cuh.)
// The GEMMs between them (bigram/VE projections, c_q/c_k/c_v, fc, proj, the head) live elsewhere.
//
// Embedding tables: the gathers (embedding_forward, embed_sum_forward) are templated on the table
// type and read either the fp32 master or a bf16 copy. Use the bf16 copy that the tied head's
// GEMM needs anyway: half the bytes, and it is what the reference computes with (its three
// tables are bf16 parameters). Gradients always go to the fp32 tables.
//
// Precision: activations and activation gradients are bf16 in memory; every kernel
// computes in fp32 and rounds once, when it stores. Parameters and parameter gradients are fp32.
// Like the reference (which casts them to the activation dtype), control parameters (scales,
// mix, smear gate, q_gain, the scalar scales) are rounded to bf16 before use.
//
// Conventions:
//   - parameter gradients ACCUMULATE (+=), as on the CPU: the caller zeroes them once per step
//     and the micro-steps add up;
//   - an activation gradient is written, or added to what is already there when the launcher's
//     `accumulate` flag says so (the residual stream's gradient has several sources);
//   - reductions are deterministic, no float atomics anywhere. A parameter gradient that is a
//     sum over the N = B*T rows (scales, mix, gate, q_gain, scalar scales) is summed per block,
//     in a fixed order, into a scratch buffer; a second small kernel adds the block partials in
//     block order. The grid is one full wave of the device (SMs x resident blocks), so results
//     are bitwise reproducible on a given GPU model. The embedding gradients (a scatter-add: many
//     tokens share a row) go through a stable counting sort of the ids (embedding_backward);
//     it uses integer atomics only, whose results do not depend on their order;
//   - bf16 tensors move 8 values (16 bytes) at a time, so their base pointers must be 16-byte
//     aligned and their row length a multiple of 8 (both checked; cudaMalloc aligns to 256).
//     fp32 parameters and gradients may sit anywhere: they are read one float at a time;
//   - the launchers that reduce or sort take a DeviceScratch: caller-owned device memory of
//     layers_scratch_bytes(...) bytes. Launchers on one stream may share it (each is done with it
//     when the next starts); launchers running concurrently on different streams may not.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_utils.cuh"  // defines: bf16, cudaCheck, lyr:: vector helpers and warp reductions
#include "model.h"         // defines: RMS_EPS, ROPE_REF_LEN, BIGRAM_MUL_*, rope_tables_cpu, visit_linear_weights, QatMode

// ----------------------------------------------------------------------------
// launch configuration

constexpr int ELEM_THREADS = 256;        // flat elementwise kernels: one thread per 8 values
constexpr int ROW_WARPS = 8;             // rmsnorm: one warp per row, 8 rows per block
constexpr int RMS_CACHE = 4;             // 8-value vectors per lane rmsnorm keeps in registers (C <= 1024 read once)
constexpr int RED_THREADS = 256;         // row-layout kernels (smear, resid_mix, residual_scale)
constexpr int REDUCE_MAX_BLOCKS = 2048;  // at most this many partial sums per reduced value
constexpr int QK_WARPS = 8;              // qk_norm_rope_gain: warps per block, one lane per 8 values of a head
constexpr int QK_STEPS = 4;              // qk_norm_rope_gain: warp-steps a warp loads before it computes (no spills, 74/123 registers fwd/bwd)
constexpr int SORT_CHUNK = 1024;         // embedding sort: positions per block (one per thread)
constexpr int EMB_PIECE = 64;            // embedding backward: sorted entries summed by one warp
constexpr int EMB_WARPS = 4;             // embedding backward: pieces per block
static_assert(RED_THREADS % 32 == 0 && ELEM_THREADS % 32 == 0, "blocks are whole warps");
static_assert(SORT_CHUNK == 1024, "sort_place_kernel runs one thread per position of a chunk (<= 1024 threads)");
static_assert(EMB_PIECE == 64, "embedding_backward_piece_kernel holds a piece in two registers per lane");

// Caller-owned device scratch for the launchers that reduce or sort.
struct DeviceScratch {
    void *ptr = nullptr;
    size_t bytes = 0;
};

// ----------------------------------------------------------------------------
// shared by the families below: per-channel partial sums and their finalize kernels, the
// launchers' host-side checks, the row layout, the flat layout

namespace lyr {

// The per-channel reduction kernels run RED_THREADS threads as RP rows of TPR threads; thread
// (tx, ty) owns the 8 channels cv*8.. of channel slice blockIdx.y and sums them over its rows.
// This adds the RP row-threads of each channel in order and writes the block's partial sums to
// partial[blockIdx.x * width + offset + channel]. sh: RED_THREADS * 8 floats.
__device__ __forceinline__ void store_channel_partial(float *partial, float *sh, const float (&acc)[8], int tx, int ty,
                                                      int TPR, int RP, int cv, int CV, size_t width, int offset) {
#pragma unroll
    for (int j = 0; j < 8; j++) sh[threadIdx.x * 8 + j] = acc[j];
    __syncthreads();
    if (ty == 0 && cv < CV) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float t = 0.f;
            for (int r = 0; r < RP; r++) t += sh[(r * TPR + tx) * 8 + j];
            partial[(size_t)blockIdx.x * width + offset + cv * 8 + j] = t;
        }
    }
    __syncthreads();  // sh is reused by the next call
}

}  // namespace lyr

// dst[j] += sum over b of partial[b * width + j], b in order (times sigmoid'(gate[j]) when gate
// is given: the smear gate's chain rule). Block (32, 32): 32 columns, 32 interleaved row sets.
__global__ void channel_partials_finalize_kernel(float *dst, const float *partial, int nblocks, int width,
                                                 const float *gate) {
    __shared__ float sh[32][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (j < width)
        for (int b = threadIdx.y; b < nblocks; b += 32) s += partial[(size_t)b * width + j];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < width) {
        float t = 0.f;
        for (int k = 0; k < 32; k++) t += sh[k][threadIdx.x];
        if (gate) {
            const float g = lyr::sigmoid(lyr::rnd(gate[j]));
            t *= g * (1.f - g);
        }
        dst[j] += t;
    }
}
// dst[0] += sum of partial[0..nblocks), one block
__global__ void scalar_partials_finalize_kernel(float *dst, const float *partial, int nblocks) {
    __shared__ float sh[32];
    float s = 0.f;
    for (int b = threadIdx.x; b < nblocks; b += blockDim.x) s += partial[b];
    s = lyr::block_sum(s, sh);
#ifdef BREAK_SCALAR_GRAD  // a deliberately wrong variant (dev/broken_variants.sh): scalar gradients 5% off
    s *= 1.05f;
#endif
    if (threadIdx.x == 0) dst[0] += s;
}

// flat kernels over n values (n need not be a multiple of 8): item i < n/8 is the vector
// [8i, 8i+8), items n/8 .. n/8 + n%8 - 1 are the single values of the tail
__device__ __forceinline__ size_t flat_items(size_t n) { return n / 8 + n % 8; }

inline void layers_require(bool ok, const char *who, const char *what) {
    if (!ok) fatal_config("layers.cuh: %s: %s", who, what);
}
inline void layers_check_aligned(const void *p, const char *who, const char *name) {
    if (((uintptr_t)p & 15) != 0)
        fatal_config("layers.cuh: %s: %s is not 16-byte aligned HINT: bf16 tensors must start on 16 bytes (cudaMalloc does)",
                     who, name);
}
inline void layers_check_rowlen(int C, const char *who, const char *name) {
    if (C <= 0 || C % 8 != 0) fatal_config("layers.cuh: %s: %s=%d must be a positive multiple of 8", who, name, C);
}
inline void layers_check_scratch(const DeviceScratch &s, size_t need, const char *who) {
    if (s.ptr == nullptr || s.bytes < need)
        fatal_config("layers.cuh: %s: scratch of %zu bytes is too small (needs %zu) HINT: allocate layers_scratch_bytes(N, C, rows)",
                     who, s.bytes, need);
    layers_check_aligned(s.ptr, who, "scratch");
}

// One full wave of the device for a kernel: SMs x resident blocks per SM, at most
// REDUCE_MAX_BLOCKS. Cached per kernel (the first call asks the driver about the current
// device; a process that mixes GPU models would need the cache keyed by device). The partition
// of the grid-stride reductions, so their summation order, depends only on this and the shape.
inline int full_wave_blocks(const void *kernel, int threads, size_t smem = 0) {
    static std::mutex mu;
    static std::vector<std::pair<const void *, int>> cache;
    std::lock_guard<std::mutex> lock(mu);
    for (auto &e : cache)
        if (e.first == kernel) return e.second;
    int dev = 0, sms = 0, per_sm = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    const int n = std::max(1, std::min(std::max(per_sm, 1) * sms, REDUCE_MAX_BLOCKS));
    cache.push_back({kernel, n});
    return n;
}

// How a RED_THREADS block covers rows of C channels: TPR threads per row (8 channels each), RP
// rows at once, `slices` channel slices (grid.y) when a row needs more than RED_THREADS threads.
struct RowLayout {
    int TPR, RP, slices;
};
inline RowLayout row_layout(int C) {
    const int CV = C / 8;
    RowLayout l;
    l.TPR = std::min(CV, RED_THREADS);
    l.RP = RED_THREADS / l.TPR;
    l.slices = ceil_div(CV, l.TPR);
    return l;
}
// blocks along x for the row-layout forward kernels: each thread takes up to FWD_ROWS rows
constexpr int FWD_ROWS = 8;
inline int fwd_grid_x(int N, const RowLayout &l) { return std::max(1, ceil_div(N, (long)l.RP * FWD_ROWS)); }
// blocks along x for a per-channel reduction kernel over N rows
inline int reduce_grid_x(const void *kernel, int N, const RowLayout &l) {
    const int wave = std::max(1, full_wave_blocks(kernel, RED_THREADS) / l.slices);
    return std::max(1, std::min(ceil_div(N, l.RP), wave));
}

inline void channel_partials_finalize(float *dst, const float *partial, int nblocks, int width, const float *gate,
                                      cudaStream_t stream) {
    channel_partials_finalize_kernel<<<ceil_div(width, 32), dim3(32, 32), 0, stream>>>(dst, partial, nblocks, width, gate);
    cudaCheckLaunch();
}

// the per-channel partial sums: at most REDUCE_MAX_BLOCKS x 3C floats (resid_mix has 2C values, with
// a skip's weights 3C: rmsnorm_resid_mix_backward)
inline size_t reduce_scratch_bytes(int C) { return (size_t)REDUCE_MAX_BLOCKS * 3 * std::max(C, 1) * sizeof(float); }

// ----------------------------------------------------------------------------
// scalar scale: out (+)= s * inp with s a scalar parameter (the value embedding's scales, the
// bigram scale). CPU twin: scalar_scale_forward_cpu / scalar_scale_backward_cpu

// out = (accumulate ? out : 0) + s * inp, s a scalar parameter
__global__ void scalar_scale_forward_kernel(bf16 *out, const bf16 *inp, const float *s_ptr, size_t n,
                                            bool accumulate) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, nv = n / 8;
    const float s = lyr::rnd(*s_ptr);
    if (i < nv) {
        float x[8], o[8];
        lyr::load8(x, inp + i * 8);
        if (accumulate) lyr::load8(o, out + i * 8);
        else lyr::zero8(o);
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] += s * x[j];
        lyr::store8(out + i * 8, o);
    } else if (i < flat_items(n)) {
        const size_t e = nv * 8 + (i - nv);
        const float o = (accumulate ? __bfloat162float(out[e]) : 0.f) + s * __bfloat162float(inp[e]);
        out[e] = __float2bfloat16(o);
    }
}
// dinp (+)= s * dout; partial[block] = the block's sum of dout * inp (grid-stride, fixed grid)
__global__ void scalar_scale_backward_kernel(bf16 *dinp, float *partial, const bf16 *dout, const bf16 *inp,
                                             const float *s_ptr, size_t n, bool accumulate) {
    __shared__ float sh[32];
    const size_t nv = n / 8, items = flat_items(n);
    const float s = lyr::rnd(*s_ptr);
    float acc = 0.f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < items; i += (size_t)gridDim.x * blockDim.x) {
        if (i < nv) {
            float x[8], d[8], o[8];
            lyr::load8(x, inp + i * 8);
            lyr::load8(d, dout + i * 8);
            if (accumulate) lyr::load8(o, dinp + i * 8);
            else lyr::zero8(o);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j] += s * d[j];
                acc += d[j] * x[j];
            }
            lyr::store8(dinp + i * 8, o);
        } else {
            const size_t e = nv * 8 + (i - nv);
            const float x = __bfloat162float(inp[e]), d = __bfloat162float(dout[e]);
            dinp[e] = __float2bfloat16((accumulate ? __bfloat162float(dinp[e]) : 0.f) + s * d);
            acc += d * x;
        }
    }
    acc = lyr::block_sum(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// out (n) (+)= s * inp
inline void scalar_scale_forward(bf16 *out, const bf16 *inp, const float *s, size_t n, bool accumulate,
                                 cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "scalar_scale_forward";
    layers_check_aligned(out, who, "out");
    layers_check_aligned(inp, who, "inp");
    if (n == 0) return;
    scalar_scale_forward_kernel<<<ceil_div(n / 8 + n % 8, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(out, inp, s, n, accumulate);
    cudaCheckLaunch();
}
// dinp (+)= s * dout; ds[0] += sum(dout * inp). dinp may be dout.
inline void scalar_scale_backward(bf16 *dinp, float *ds, const bf16 *dout, const bf16 *inp, const float *s, size_t n,
                                  bool accumulate, DeviceScratch scratch, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "scalar_scale_backward";
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(inp, who, "inp");
    if (n == 0) return;
    const int wave = full_wave_blocks((const void *)scalar_scale_backward_kernel, ELEM_THREADS);
    const int nb = std::max(1, std::min(ceil_div(n / 8 + n % 8, ELEM_THREADS), wave));
    layers_check_scratch(scratch, (size_t)nb * sizeof(float), who);
    float *partial = (float *)scratch.ptr;
    scalar_scale_backward_kernel<<<nb, ELEM_THREADS, 0, stream>>>(dinp, partial, dout, inp, s, n, accumulate);
    cudaCheckLaunch();
    scalar_partials_finalize_kernel<<<1, 1024, 0, stream>>>(ds, partial, nb);
    cudaCheckLaunch();
}

// The constant 1 as a device scalar, for add_inplace.
__device__ float LAYERS_ONE = 1.f;

// dst (n) += src: a gradient with several sources gathering them (the backward's skip and x0
// sums). It is scalar_scale_forward with s = 1 (exact: 1 * x == x), so the sum rounds once.
inline void add_inplace(bf16 *dst, const bf16 *src, size_t n, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    void *one = nullptr;
    cudaCheck(cudaGetSymbolAddress(&one, LAYERS_ONE));  // per device: no caching
    scalar_scale_forward(dst, src, (const float *)one, n, true, stream);
}

// ----------------------------------------------------------------------------
// embeddings: bigram_hash, embedding_forward/backward (a deterministic sorted scatter-add),
// embed_sum_forward/backward (tok_emb[ids] + bigram_scale * bigram projection). CPU twins:
// bigram_hash_cpu, embedding_forward_cpu / embedding_backward_cpu, embed_sum_forward_cpu /
// embed_sum_backward_cpu

// h[b,0] = buckets-1; h[b,t] = (36313*ids[b,t] XOR 27191*ids[b,t-1]) mod (buckets-1), in int32
// with wraparound and a floor modulo, exactly as bigram_hash_cpu. One thread per position.
__global__ void bigram_hash_kernel(int *h, const int *ids, int N, int T, int buckets) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const int32_t mod = buckets - 1;
    if (n % T == 0) {
        h[n] = mod;
        return;
    }
    const int32_t cur = (int32_t)((uint32_t)BIGRAM_MUL_CUR * (uint32_t)ids[n]);
    const int32_t prev = (int32_t)((uint32_t)BIGRAM_MUL_PREV * (uint32_t)ids[n - 1]);
    int32_t r = (cur ^ prev) % mod;
    if (r < 0) r += mod;
    h[n] = r;
}

// out[n,:] = table[ids[n],:]. An id outside [0, rows) gives a NaN row, so a bad id shows in the
// loss instead of reading out of bounds. One thread per 8 values.
template <typename Tw>
__global__ void embedding_forward_kernel(bf16 *out, const int *ids, const Tw *table, int N, int C, int rows) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int CV = C / 8;
    if (i >= (size_t)N * CV) return;
    const int n = (int)(i / CV), c = (int)(i % CV) * 8;
    const int id = ids[n];
    float v[8];
    if (id < 0 || id >= rows) {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = lyr::nan_value();
    } else {
        lyr::load8(v, table + (size_t)id * C + c);
    }
    lyr::store8(out + (size_t)n * C + c, v);
}

// out[n,:] = tok_emb[ids[n],:] + bigram_scale * bg_proj[n,:]
template <typename Tw>
__global__ void embed_sum_forward_kernel(bf16 *out, const int *ids, const Tw *tok_emb, const bf16 *bg_proj,
                                       const float *bigram_scale, int N, int D, int V) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int CV = D / 8;
    if (i >= (size_t)N * CV) return;
    const int n = (int)(i / CV), c = (int)(i % CV) * 8;
    const int id = ids[n];
    const float s = lyr::rnd(*bigram_scale);
    float e[8], g[8];
    lyr::load8(g, bg_proj + (size_t)n * D + c);
    if (id < 0 || id >= V) {
#pragma unroll
        for (int j = 0; j < 8; j++) e[j] = lyr::nan_value();
    } else {
        lyr::load8(e, tok_emb + (size_t)id * D + c);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) e[j] += s * g[j];
    lyr::store8(out + (size_t)n * D + c, e);
}

// The embedding gradient dtable[ids[n],:] += dout[n,:], deterministic, in three steps:
//  1. a stable counting sort of the positions by id (sort_*_kernel): sorted_pos lists the
//     positions of id 0 in increasing order, then those of id 1, ...; start[r] is where id r
//     begins. Each block of SORT_CHUNK positions counts its ids (integer atomics), the counts
//     are scanned over chunks then over ids, and every position finds its slot from its chunk's
//     offset plus its rank among equal ids earlier in the chunk. Bad ids (outside [0, rows)) get
//     the key `rows`, sort last, and are ignored.
//  2. the sorted list is cut into fixed pieces of EMB_PIECE entries; one warp per piece (and per
//     256 channels) adds up each run of equal ids in position order. A run that lies inside its
//     piece is added straight into dtable (no one else touches that row); a run that crosses a
//     piece boundary leaves its part in the piece's `tail` (the run starts here) or `head` (it
//     started earlier) slot.
//  3. the warp of the piece where a crossing run starts adds its tail and the heads of the
//     following pieces, in order, into dtable.
// Fixed pieces keep the work balanced however skewed the ids are (a frequent token is spread
// over many warps), and every sum runs in a fixed order.

// cnt[c][key] = occurrences of key among the positions of chunk c (cnt zeroed by the launcher)
__global__ void sort_hist_kernel(int *cnt, const int *ids, int N, int rows) {
    const int R1 = rows + 1;
    for (int i = threadIdx.x; i < SORT_CHUNK; i += blockDim.x) {
        const long n = (long)blockIdx.x * SORT_CHUNK + i;
        if (n < N) {
            const int id = ids[n];
            const int key = (id < 0 || id >= rows) ? rows : id;
            atomicAdd(&cnt[(size_t)blockIdx.x * R1 + key], 1);
        }
    }
}
// per key, over chunks: cnt[c][key] <- occurrences in chunks before c; total[key] = all of them
__global__ void sort_colscan_kernel(int *cnt, int *total, int nch, int R1) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R1) return;
    int run = 0;
    for (int c = 0; c < nch; c++) {
        const size_t at = (size_t)c * R1 + r;
        const int t = cnt[at];
        cnt[at] = run;
        run += t;
    }
    total[r] = run;
}
// start[key] = exclusive prefix sum of total over keys, start[R1] = the sum; one block of 1024
__global__ void __launch_bounds__(1024) sort_rowscan_kernel(int *start, const int *total, int R1) {
    __shared__ int wsum[32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int carry = 0;
    for (int base = 0; base < R1; base += 1024) {
        const int i = base + threadIdx.x;
        const int v = i < R1 ? total[i] : 0;
        int x = v;  // inclusive scan within the warp
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) wsum[w] = x;
        __syncthreads();
        if (w == 0) {  // scan the 32 warp totals
            int s = wsum[lane];
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(0xffffffffu, s, o);
                if (lane >= o) s += y;
            }
            wsum[lane] = s;
        }
        __syncthreads();
        if (i < R1) start[i] = carry + (w > 0 ? wsum[w - 1] : 0) + x - v;
        carry += wsum[31];
        __syncthreads();  // wsum is rewritten by the next round
    }
    if (threadIdx.x == 0) start[R1] = carry;
}
// Stable placement: the position n with key k, preceded in the whole list by m positions of
// key k, goes to slot start[k] + m. m = (earlier chunks: cnt) + (earlier warps of this chunk:
// counted from shared memory) + (earlier lanes of this warp: __match_any_sync).
__global__ void __launch_bounds__(SORT_CHUNK) sort_place_kernel(int *sorted_pos, int *sorted_key, const int *ids,
                                                                const int *cnt, const int *start, int N, int rows) {
    __shared__ __align__(16) int keys[SORT_CHUNK];
    const int R1 = rows + 1, i = threadIdx.x, lane = i & 31, w = i >> 5;
    const long n = (long)blockIdx.x * SORT_CHUNK + i;
    int key = -1;  // past the end: equal to no real key
    if (n < N) {
        const int id = ids[n];
        key = (id < 0 || id >= rows) ? rows : id;
    }
    keys[i] = key;
    __syncthreads();
    int rank = 0;
    const int4 *k4 = reinterpret_cast<const int4 *>(keys);
    for (int q = 0; q < w * 8; q++) {  // the 32*w keys of the earlier warps, 4 at a time
        const int4 k = k4[q];
        rank += (k.x == key) + (k.y == key) + (k.z == key) + (k.w == key);
    }
    const unsigned peers = __match_any_sync(0xffffffffu, key);
    rank += __popc(peers & ((1u << lane) - 1u));
    if (n < N) {
        const int slot = start[key] + cnt[(size_t)blockIdx.x * R1 + key] + rank;
        sorted_pos[slot] = (int)n;
        sorted_key[slot] = key;
    }
}

// Add acc (8 channels from c) to a float row that may be only 4-byte aligned.
__device__ __forceinline__ void add8_f32(float *dst, const float (&acc)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) dst[j] += acc[j];
}
__device__ __forceinline__ void put8_f32(float *dst, const float (&acc)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) dst[j] = acc[j];
}

// Step 2. Block (32, EMB_WARPS): warp y sums piece blockIdx.x*EMB_WARPS + y over the channel
// vectors blockIdx.y*32 + lane. head, tail: (npieces, C).
__global__ void __launch_bounds__(32 * EMB_WARPS) embedding_backward_piece_kernel(
    float *dtable, float *head, float *tail, const bf16 *dout, const int *sorted_pos, const int *sorted_key,
    const int *start, int C, int rows) {
    const int lane = threadIdx.x;
    const int p = blockIdx.x * EMB_WARPS + threadIdx.y;
    const int nvalid = start[rows];  // entries with a good id
    const int begin = p * EMB_PIECE;
    if (begin >= nvalid) return;  // warp-uniform
    const int end = min(begin + EMB_PIECE, nvalid), cnt = end - begin;
    const int CV = C / 8, cv = blockIdx.y * 32 + lane;
    const bool active = cv < CV;
    const int c = cv * 8;
    // the piece's keys and positions: entry e is in lane e % 32 of register e / 32
    const int key0 = lane < cnt ? sorted_key[begin + lane] : -1;
    const int key1 = lane + 32 < cnt ? sorted_key[begin + 32 + lane] : -1;
    const int pos0 = lane < cnt ? sorted_pos[begin + lane] : 0;
    const int pos1 = lane + 32 < cnt ? sorted_pos[begin + 32 + lane] : 0;

    float acc[8];
    lyr::zero8(acc);
    int cur = __shfl_sync(0xffffffffu, key0, 0);
    // a run of key r, finished: into dtable if it lies inside the piece, else into a slot
    auto flush = [&](int r) {
        if (!active) return;
        const bool starts_here = start[r] >= begin, ends_here = start[r + 1] <= end;
        if (starts_here && ends_here) add8_f32(dtable + (size_t)r * C + c, acc);
        else if (starts_here) put8_f32(tail + (size_t)p * C + c, acc);
        else put8_f32(head + (size_t)p * C + c, acc);
    };
    for (int e0 = 0; e0 < cnt; e0 += 8) {
        // issue the loads of 8 entries first, then add them in order
        float v[8][8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int e = e0 + u;  // warp-uniform
            const int pe = __shfl_sync(0xffffffffu, e < 32 ? pos0 : pos1, e & 31);
            if (e < cnt && active) lyr::load8(v[u], dout + (size_t)pe * C + c);
            else lyr::zero8(v[u]);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int e = e0 + u;
            const int ke = __shfl_sync(0xffffffffu, e < 32 ? key0 : key1, e & 31);
            if (e >= cnt) break;
            if (ke != cur) {
                flush(cur);
                cur = ke;
                lyr::zero8(acc);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] += v[u][j];
        }
    }
    flush(cur);
}

// Step 3. Same grid as step 2: the warp of piece p finishes the run that starts in p and
// continues past it (if any).
__global__ void __launch_bounds__(32 * EMB_WARPS) embedding_backward_chain_kernel(
    float *dtable, const float *head, const float *tail, const int *sorted_key, const int *start, int C, int rows) {
    const int lane = threadIdx.x;
    const int p = blockIdx.x * EMB_WARPS + threadIdx.y;
    const int nvalid = start[rows];
    const int begin = p * EMB_PIECE;
    if (begin >= nvalid) return;
    const int end = min(begin + EMB_PIECE, nvalid);
    const int r = sorted_key[end - 1];  // the piece's last run
    const int rs = start[r], re = start[r + 1];
    if (!(rs >= begin && re > end)) return;  // it did not start here, or it ends here
    const int cv = blockIdx.y * 32 + lane, c = cv * 8;
    if (cv >= C / 8) return;
    const int qlast = (re - 1) / EMB_PIECE;
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = tail[(size_t)p * C + c + j];
    for (int q = p + 1; q <= qlast; q++) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j] += head[(size_t)q * C + c + j];
    }
    add8_f32(dtable + (size_t)r * C + c, acc);
}

// The embedding sort and piece sums. Offsets of each array in the scratch (256-byte aligned).
struct EmbedScratchLayout {
    size_t cnt, total, start, sorted_pos, sorted_key, head, tail, bytes;
};
inline EmbedScratchLayout embed_scratch_layout(int N, int C, int rows) {
    auto up = [](size_t x) { return (x + 255) & ~(size_t)255; };
    const size_t R1 = (size_t)rows + 1, nch = (size_t)ceil_div(std::max(N, 1), SORT_CHUNK);
    const size_t npieces = (size_t)ceil_div(std::max(N, 1), EMB_PIECE);
    EmbedScratchLayout l;
    size_t off = 0;
    l.cnt = off;        off += up(nch * R1 * sizeof(int));
    l.total = off;      off += up(R1 * sizeof(int));
    l.start = off;      off += up((R1 + 1) * sizeof(int));
    l.sorted_pos = off; off += up((size_t)std::max(N, 1) * sizeof(int));
    l.sorted_key = off; off += up((size_t)std::max(N, 1) * sizeof(int));
    l.head = off;       off += up(npieces * C * sizeof(float));
    l.tail = off;       off += up(npieces * C * sizeof(float));
    l.bytes = off;
    return l;
}
inline size_t embedding_backward_scratch_bytes(int N, int C, int rows) { return embed_scratch_layout(N, C, rows).bytes; }

// h (N) = the BigramHash bucket of each position; ids (B*T) int32
inline void bigram_hash(int *h, const int *ids, int B, int T, int buckets, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "bigram_hash";
    layers_require(B >= 0 && T >= 1, who, "needs B >= 0 and T >= 1");
    layers_require(buckets >= 2, who, "needs at least 2 buckets (the hash is mod buckets-1)");
    const int N = B * T;
    if (N == 0) return;
    bigram_hash_kernel<<<ceil_div(N, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(h, ids, N, T, buckets);
    cudaCheckLaunch();
}

// out (N, C) bf16 = table[ids] with table (rows, C) fp32 (a master copy) or bf16 (a weight copy)
template <typename Tw>
inline void embedding_forward(bf16 *out, const int *ids, const Tw *table, int N, int C, int rows, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "embedding_forward";
    layers_check_rowlen(C, who, "C");
    layers_check_aligned(out, who, "out");
    if (sizeof(Tw) == 2) layers_check_aligned(table, who, "table");
    if (N <= 0) return;
    const size_t items = (size_t)N * (C / 8);
    embedding_forward_kernel<Tw><<<ceil_div(items, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(out, ids, table, N, C, rows);
    cudaCheckLaunch();
}

// dtable (rows, C) fp32 += the scatter of dout (N, C) by ids; deterministic (see above)
inline void embedding_backward(float *dtable, const bf16 *dout, const int *ids, int N, int C, int rows,
                               DeviceScratch scratch, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "embedding_backward";
    layers_check_rowlen(C, who, "C");
    layers_require(rows >= 1, who, "needs a table of at least 1 row");
    layers_check_aligned(dout, who, "dout");
    if (N <= 0) return;
    const EmbedScratchLayout L = embed_scratch_layout(N, C, rows);
    layers_check_scratch(scratch, L.bytes, who);
    char *base = (char *)scratch.ptr;
    int *cnt = (int *)(base + L.cnt), *total = (int *)(base + L.total), *start = (int *)(base + L.start);
    int *sorted_pos = (int *)(base + L.sorted_pos), *sorted_key = (int *)(base + L.sorted_key);
    float *head = (float *)(base + L.head), *tail = (float *)(base + L.tail);
    const int R1 = rows + 1, nch = ceil_div(N, SORT_CHUNK), npieces = ceil_div(N, EMB_PIECE);
    // 1. stable counting sort of the positions by id
    cudaCheck(cudaMemsetAsync(cnt, 0, (size_t)nch * R1 * sizeof(int), stream));
    sort_hist_kernel<<<nch, 256, 0, stream>>>(cnt, ids, N, rows);
    cudaCheckLaunch();
    sort_colscan_kernel<<<ceil_div(R1, 256), 256, 0, stream>>>(cnt, total, nch, R1);
    cudaCheckLaunch();
    sort_rowscan_kernel<<<1, 1024, 0, stream>>>(start, total, R1);
    cudaCheckLaunch();
    sort_place_kernel<<<nch, SORT_CHUNK, 0, stream>>>(sorted_pos, sorted_key, ids, cnt, start, N, rows);
    cudaCheckLaunch();
    // 2. + 3. sums of runs of equal ids, in pieces, then the runs that cross pieces
    const dim3 grid(ceil_div(npieces, EMB_WARPS), ceil_div(C / 8, 32)), block(32, EMB_WARPS);
    embedding_backward_piece_kernel<<<grid, block, 0, stream>>>(dtable, head, tail, dout, sorted_pos, sorted_key, start, C, rows);
    cudaCheckLaunch();
    embedding_backward_chain_kernel<<<grid, block, 0, stream>>>(dtable, head, tail, sorted_key, start, C, rows);
    cudaCheckLaunch();
}

// out (N, D) = tok_emb[ids] + bigram_scale * bg_proj; tok_emb (V, D) fp32 or bf16, bigram_scale
// a device scalar
template <typename Tw>
inline void embed_sum_forward(bf16 *out, const int *ids, const Tw *tok_emb, const bf16 *bg_proj, const float *bigram_scale,
                            int N, int D, int V, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "embed_sum_forward";
    layers_check_rowlen(D, who, "D");
    layers_check_aligned(out, who, "out");
    layers_check_aligned(bg_proj, who, "bg_proj");
    if (sizeof(Tw) == 2) layers_check_aligned(tok_emb, who, "tok_emb");
    if (N <= 0) return;
    const size_t items = (size_t)N * (D / 8);
    embed_sum_forward_kernel<Tw><<<ceil_div(items, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(out, ids, tok_emb, bg_proj,
                                                                                          bigram_scale, N, D, V);
    cudaCheckLaunch();
}

// The embedding sum's backward: dbg_proj (+)= bigram_scale * dout; dbigram_scale += sum(dout *
// bg_proj); dtok_emb (V, D) fp32 += scatter of dout by ids (skipped when dtok_emb is null: the
// head's GEMM adds the other part of the tied embedding's gradient).
inline void embed_sum_backward(float *dtok_emb, bf16 *dbg_proj, float *dbigram_scale, const bf16 *dout, const int *ids,
                             const bf16 *bg_proj, const float *bigram_scale, int N, int D, int V, bool accumulate,
                             DeviceScratch scratch, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    layers_check_rowlen(D, "embed_sum_backward", "D");
    if (N <= 0) return;
    scalar_scale_backward(dbg_proj, dbigram_scale, dout, bg_proj, bigram_scale, (size_t)N * D, accumulate, scratch, stream);
    if (dtok_emb) embedding_backward(dtok_emb, dout, ids, N, D, V, scratch, stream);
}

// ----------------------------------------------------------------------------
// rmsnorm: out = scale * x / sqrt(mean(x^2) + eps), one warp per row. CPU twin:
// rmsnorm_forward_cpu / rmsnorm_backward_cpu

// The end of a row's rmsnorm, shared by rmsnorm_forward_kernel and the fused kernels below: the
// lane's partial sum of squares ss -> r = 1/rms (rstd[n] = r), then out = v * r * scale, the
// first K vectors from the registers v, the longer rows' rest read back from src (the row's
// values in memory). One warp per row.
template <int K>
__device__ __forceinline__ void rmsnorm_row_finish(bf16 *o, float *rstd, const bf16 *src, const float (&v)[K][8], float ss,
                                                   int n, int C, int CV, int lane, float scale) {
    ss = lyr::warp_sum(ss);
    const float r = rsqrtf(ss / (float)C + (float)RMS_EPS);
    if (rstd && lane == 0) rstd[n] = r;
    const float rs = r * scale;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int cv = k * 32 + lane;
        if (cv < CV) {
            float t[8];
#pragma unroll
            for (int j = 0; j < 8; j++) t[j] = v[k][j] * rs;
            lyr::store8(o + cv * 8, t);
        }
    }
    for (int cv = K * 32 + lane; cv < CV; cv += 32) {
        float t[8];
        lyr::load8(t, src + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) t[j] *= rs;
        lyr::store8(o + cv * 8, t);
    }
}

template <int CACHE>
__global__ void __launch_bounds__(ROW_WARPS * 32) rmsnorm_forward_kernel(bf16 *out, float *rstd, const bf16 *inp,
                                                                          int N, int C, float scale) {
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    const int CV = C / 8;
    const bf16 *x = inp + (size_t)n * C;
    bf16 *o = out + (size_t)n * C;
    float v[CACHE][8];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < CACHE; k++) {
        const int cv = k * 32 + lane;
        if (cv < CV) {
            lyr::load8(v[k], x + cv * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) ss += v[k][j] * v[k][j];
        }
    }
    for (int cv = CACHE * 32 + lane; cv < CV; cv += 32) {  // rows longer than the cache: read twice
        float t[8];
        lyr::load8(t, x + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) ss += t[j] * t[j];
    }
    rmsnorm_row_finish<CACHE>(o, rstd, x, v, ss, n, C, CV, lane, scale);
}

// The lane's vectors k * 32 + lane (k < K) of a row's dout and inp into dy, x, and their part of
// sum(x * dy). One warp per row.
template <int K>
__device__ __forceinline__ float rmsnorm_row_load_dot(float (&dy)[K][8], float (&x)[K][8], const bf16 *dout, const bf16 *inp,
                                                      int CV, int lane) {
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int cv = k * 32 + lane;
        if (cv < CV) {
            lyr::load8(dy[k], dout + cv * 8);
            lyr::load8(x[k], inp + cv * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) dot += x[k][j] * dy[k][j];
        }
    }
    return dot;
}

// dx = scale * r * (dy - xhat * mean(xhat * dy)), xhat = x * r; written as a*dy - b*x.
// FROM_OUT: inp is the forward's output y = scale * x * r instead of its input x (xhat = y /
// scale): the same formula as a*dy - b'*y with b' = r * sum(y * dy) / (scale * C), so a model
// need not keep the norm's input when it keeps its output anyway.
template <int CACHE, bool FROM_OUT>
__global__ void __launch_bounds__(ROW_WARPS * 32) rmsnorm_backward_kernel(bf16 *dinp, const bf16 *dout,
                                                                           const bf16 *inp, const float *rstd,
                                                                           int N, int C, float scale,
                                                                           bool accumulate) {
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    const int CV = C / 8;
    const size_t row = (size_t)n * C;
    float dy[CACHE][8], x[CACHE][8];
    float dot = rmsnorm_row_load_dot<CACHE>(dy, x, dout + row, inp + row, CV, lane);  // sum(x * dy), this lane's part
    for (int cv = CACHE * 32 + lane; cv < CV; cv += 32) {
        float a[8], b[8];
        lyr::load8(a, dout + row + cv * 8);
        lyr::load8(b, inp + row + cv * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) dot += b[j] * a[j];
    }
    dot = lyr::warp_sum(dot);
    const float r = rstd[n];
    float a = scale * r, b = FROM_OUT ? r * dot / (scale * (float)C) : scale * r * r * r * dot / (float)C;
#ifdef BREAK_RMSNORM_FROM_OUT  // a deliberately wrong variant (dev/broken_variants.sh): y read as if it were x
    if (FROM_OUT) b = scale * r * r * r * dot / (float)C;
#endif
#pragma unroll
    for (int k = 0; k < CACHE; k++) {
        const int cv = k * 32 + lane;
        if (cv < CV) {
            float o[8];
            if (accumulate) lyr::load8(o, dinp + row + cv * 8);
            else lyr::zero8(o);
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] += a * dy[k][j] - b * x[k][j];
            lyr::store8(dinp + row + cv * 8, o);
        }
    }
    for (int cv = CACHE * 32 + lane; cv < CV; cv += 32) {
        float d[8], xv[8], o[8];
        lyr::load8(d, dout + row + cv * 8);
        lyr::load8(xv, inp + row + cv * 8);
        if (accumulate) lyr::load8(o, dinp + row + cv * 8);
        else lyr::zero8(o);
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] += a * d[j] - b * xv[j];
        lyr::store8(dinp + row + cv * 8, o);
    }
}

// out (N, C) = scale * inp / sqrt(mean(inp^2) + eps); rstd (N) may be null (no backward). out may be inp.
inline void rmsnorm_forward(bf16 *out, float *rstd, const bf16 *inp, int N, int C, float scale, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "rmsnorm_forward";
    layers_check_rowlen(C, who, "C");
    layers_check_aligned(out, who, "out");
    layers_check_aligned(inp, who, "inp");
    if (N <= 0) return;
    // the smaller register cache when it holds the whole row (fewer registers, more warps)
    if (C <= 512)
        rmsnorm_forward_kernel<2><<<ceil_div(N, ROW_WARPS), ROW_WARPS * 32, 0, stream>>>(out, rstd, inp, N, C, scale);
    else
        rmsnorm_forward_kernel<RMS_CACHE><<<ceil_div(N, ROW_WARPS), ROW_WARPS * 32, 0, stream>>>(out, rstd, inp, N, C, scale);
    cudaCheckLaunch();
}
template <bool FROM_OUT>
inline void rmsnorm_backward_launch(bf16 *dinp, const bf16 *dout, const bf16 *inp, const float *rstd, int N, int C,
                                    float scale, bool accumulate, cudaStream_t stream, const char *who) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    layers_check_rowlen(C, who, "C");
    if (FROM_OUT) layers_require(scale != 0.f, who, "scale must not be 0 (xhat = out / scale)");
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(inp, who, FROM_OUT ? "out" : "inp");
    if (N <= 0) return;
    rmsnorm_backward_kernel<RMS_CACHE / 2, FROM_OUT><<<ceil_div(N, ROW_WARPS), ROW_WARPS * 32, 0, stream>>>(
        dinp, dout, inp, rstd, N, C, scale, accumulate);
    cudaCheckLaunch();
}
// dinp (+)= the gradient through rmsnorm (rstd from the forward). dinp may be dout.
inline void rmsnorm_backward(bf16 *dinp, const bf16 *dout, const bf16 *inp, const float *rstd, int N, int C,
                             float scale, bool accumulate, cudaStream_t stream) {
    rmsnorm_backward_launch<false>(dinp, dout, inp, rstd, N, C, scale, accumulate, stream, "rmsnorm_backward");
}
// The same gradient from the forward's output out = scale * rmsnorm(inp) (bf16, as stored) and
// rstd instead of inp: the model keeps ln1/ln2 for the GEMMs' weight gradients anyway, so it
// need not keep x_in / x_mid too. In exact math equal to rmsnorm_backward (CPU twin:
// rmsnorm_backward_cpu on inp); in bf16 xhat comes from the rounded output, an error of the
// same size as the rounding of inp. scale must not be 0. dinp may be dout.
inline void rmsnorm_backward_from_out(bf16 *dinp, const bf16 *dout, const bf16 *out, const float *rstd, int N, int C,
                                      float scale, bool accumulate, cudaStream_t stream) {
    rmsnorm_backward_launch<true>(dinp, dout, out, rstd, N, C, scale, accumulate, stream, "rmsnorm_backward_from_out");
}

// ----------------------------------------------------------------------------
// smear, resid_mix, residual_scale. CPU twins: smear_forward_cpu / smear_backward_cpu,
// resid_mix_forward_cpu / resid_mix_backward_cpu, residual_scale_forward_cpu /
// residual_scale_backward_cpu.
//
// All run RED_THREADS threads as RP rows x TPR threads, each
// thread owning 8 channels of a channel slice (blockIdx.y) and striding over rows: a thread loads
// its channels' parameters once (reading 8-16 scattered floats per 16-byte vector would make
// these kernels bound by L1, not DRAM). The backward kernels also sum their parameter gradients
// per block (lyr::store_channel_partial).

// out[b,t] = (1-g) x[b,t] + g x[b,t-1], g = sigmoid(gate), x[b,-1] = 0
__global__ void __launch_bounds__(RED_THREADS) smear_forward_kernel(bf16 *out, const bf16 *inp, const float *gate,
                                                                    int N, int T, int C, int TPR, int RP) {
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    if (ty >= RP || cv >= CV) return;
    float g[8];
#pragma unroll
    for (int j = 0; j < 8; j++) g[j] = lyr::sigmoid(lyr::rnd(gate[c + j]));
    for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
        const size_t at = (size_t)n * C + c;
        float x[8], prev[8];
        lyr::load8(x, inp + at);
        if (n % T) lyr::load8(prev, inp + at - C);
        else lyr::zero8(prev);  // never across sequences
#pragma unroll
        for (int j = 0; j < 8; j++) x[j] = (1.f - g[j]) * x[j] + g[j] * prev[j];
        lyr::store8(out + at, x);
    }
}

// dinp[t] (+)= (1-g) dout[t] + g dout[t+1]; partial: sum of dout[t] * (x[t-1] - x[t]) (the
// finalize multiplies by g(1-g))
__global__ void __launch_bounds__(RED_THREADS) smear_backward_kernel(bf16 *dinp, float *partial, const bf16 *dout,
                                                                     const bf16 *inp, const float *gate, int N,
                                                                     int T, int C, int TPR, int RP,
                                                                     bool accumulate) {
    __shared__ float sh[RED_THREADS * 8];
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    const bool active = ty < RP && cv < CV;
    float acc[8];
    lyr::zero8(acc);
    if (active) {
        float g[8];
#pragma unroll
        for (int j = 0; j < 8; j++) g[j] = lyr::sigmoid(lyr::rnd(gate[c + j]));
        for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
            const size_t at = (size_t)n * C + c;
            const int t = n % T;
            float d[8], dn[8], x[8], xp[8], o[8];
            lyr::load8(d, dout + at);
            lyr::load8(x, inp + at);
            if (t + 1 < T) lyr::load8(dn, dout + at + C);
            else lyr::zero8(dn);
            if (t > 0) lyr::load8(xp, inp + at - C);
            else lyr::zero8(xp);
            if (accumulate) lyr::load8(o, dinp + at);
            else lyr::zero8(o);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j] += (1.f - g[j]) * d[j] + g[j] * dn[j];
                acc[j] += d[j] * (xp[j] - x[j]);
            }
            lyr::store8(dinp + at, o);
        }
    }
    lyr::store_channel_partial(partial, sh, acc, tx, ty, TPR, RP, cv, CV, (size_t)C, 0);
}

// out = mix[0] * x + mix[1] * x0, mix (2, C)
__global__ void __launch_bounds__(RED_THREADS) resid_mix_forward_kernel(bf16 *out, const bf16 *x, const bf16 *x0,
                                                                        const float *mix, int N, int C, int TPR,
                                                                        int RP) {
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    if (ty >= RP || cv >= CV) return;
    float m0[8], m1[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        m0[j] = lyr::rnd(mix[c + j]);
        m1[j] = lyr::rnd(mix[C + c + j]);
    }
    for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
        const size_t at = (size_t)n * C + c;
        float a[8], b[8];
        lyr::load8(a, x + at);
        lyr::load8(b, x0 + at);
#pragma unroll
        for (int j = 0; j < 8; j++) a[j] = m0[j] * a[j] + m1[j] * b[j];
        lyr::store8(out + at, a);
    }
}

// dx (+)= mix0 * dout; dx0 (+)= mix1 * dout; partial (2, C): sums of dout * x and dout * x0
__global__ void __launch_bounds__(RED_THREADS) resid_mix_backward_kernel(bf16 *dx, bf16 *dx0, float *partial,
                                                                         const bf16 *dout, const bf16 *x,
                                                                         const bf16 *x0, const float *mix, int N,
                                                                         int C, int TPR, int RP, bool acc_dx,
                                                                         bool acc_dx0) {
    __shared__ float sh[RED_THREADS * 8];
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    const bool active = ty < RP && cv < CV;
    float acc0[8], acc1[8];
    lyr::zero8(acc0);
    lyr::zero8(acc1);
    if (active) {
        float m0[8], m1[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            m0[j] = lyr::rnd(mix[c + j]);
            m1[j] = lyr::rnd(mix[C + c + j]);
        }
        for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
            const size_t at = (size_t)n * C + c;
            float d[8], a[8], b[8], o[8], o0[8];
            lyr::load8(d, dout + at);
            lyr::load8(a, x + at);
            lyr::load8(b, x0 + at);
            if (acc_dx) lyr::load8(o, dx + at);
            else lyr::zero8(o);
            if (acc_dx0) lyr::load8(o0, dx0 + at);
            else lyr::zero8(o0);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j] += m0[j] * d[j];
                o0[j] += m1[j] * d[j];
                acc0[j] += d[j] * a[j];
                acc1[j] += d[j] * b[j];
            }
            lyr::store8(dx + at, o);
            lyr::store8(dx0 + at, o0);
        }
    }
    lyr::store_channel_partial(partial, sh, acc0, tx, ty, TPR, RP, cv, CV, (size_t)2 * C, 0);
    lyr::store_channel_partial(partial, sh, acc1, tx, ty, TPR, RP, cv, CV, (size_t)2 * C, C);
}

// out = x + scale * y, scale (C)
__global__ void __launch_bounds__(RED_THREADS) residual_scale_forward_kernel(bf16 *out, const bf16 *x,
                                                                             const float *scale, const bf16 *y, int N,
                                                                             int C, int TPR, int RP) {
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    if (ty >= RP || cv >= CV) return;
    float s[8];
#pragma unroll
    for (int j = 0; j < 8; j++) s[j] = lyr::rnd(scale[c + j]);
    for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
        const size_t at = (size_t)n * C + c;
        float a[8], b[8];
        lyr::load8(a, x + at);
        lyr::load8(b, y + at);
#pragma unroll
        for (int j = 0; j < 8; j++) a[j] = __fmaf_rn(s[j], b[j], a[j]);  // explicit: the fused passes repeat it bit for bit
        lyr::store8(out + at, a);
    }
}

// dx (+)= dout (skipped when dx is null); dy (+)= scale * dout; partial: sums of dout * y
__global__ void __launch_bounds__(RED_THREADS) residual_scale_backward_kernel(bf16 *dx, bf16 *dy, float *partial,
                                                                              const bf16 *dout, const float *scale,
                                                                              const bf16 *y, int N, int C, int TPR,
                                                                              int RP, bool acc_dx, bool acc_dy) {
    __shared__ float sh[RED_THREADS * 8];
    const int tx = threadIdx.x % TPR, ty = threadIdx.x / TPR, CV = C / 8;
    const int cv = blockIdx.y * TPR + tx, c = cv * 8;
    const bool active = ty < RP && cv < CV;
    float acc[8];
    lyr::zero8(acc);
    if (active) {
        float s[8];
#pragma unroll
        for (int j = 0; j < 8; j++) s[j] = lyr::rnd(scale[c + j]);
        for (int n = blockIdx.x * RP + ty; n < N; n += gridDim.x * RP) {
            const size_t at = (size_t)n * C + c;
            float d[8], v[8], o[8];
            lyr::load8(d, dout + at);
            lyr::load8(v, y + at);
            if (dx) {
                if (acc_dx) {
                    lyr::load8(o, dx + at);
#pragma unroll
                    for (int j = 0; j < 8; j++) o[j] += d[j];
                    lyr::store8(dx + at, o);
                } else {
                    lyr::store8(dx + at, d);
                }
            }
            if (acc_dy) lyr::load8(o, dy + at);
            else lyr::zero8(o);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                o[j] += s[j] * d[j];
                acc[j] += d[j] * v[j];
            }
            lyr::store8(dy + at, o);
        }
    }
    lyr::store_channel_partial(partial, sh, acc, tx, ty, TPR, RP, cv, CV, (size_t)C, 0);
}

// out (B, T, C) = smear(inp); out must not be inp (each row reads its predecessor)
inline void smear_forward(bf16 *out, const bf16 *inp, const float *gate, int B, int T, int C, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "smear_forward";
    layers_check_rowlen(C, who, "C");
    layers_require(B >= 0 && T >= 1, who, "needs B >= 0 and T >= 1");
    layers_require(out != inp, who, "out must not be inp");
    layers_check_aligned(out, who, "out");
    layers_check_aligned(inp, who, "inp");
    const int N = B * T;
    if (N == 0) return;
    const RowLayout l = row_layout(C);
    smear_forward_kernel<<<dim3(fwd_grid_x(N, l), l.slices), RED_THREADS, 0, stream>>>(out, inp, gate, N, T, C, l.TPR, l.RP);
    cudaCheckLaunch();
}
// dinp (+)= the input gradient; dgate (C) += the gate gradient. dinp must not be dout.
inline void smear_backward(bf16 *dinp, float *dgate, const bf16 *dout, const bf16 *inp, const float *gate, int B, int T,
                           int C, bool accumulate, DeviceScratch scratch, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "smear_backward";
    layers_check_rowlen(C, who, "C");
    layers_require(B >= 0 && T >= 1, who, "needs B >= 0 and T >= 1");
    layers_require(dinp != dout, who, "dinp must not be dout");
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(inp, who, "inp");
    const int N = B * T;
    if (N == 0) return;
    const RowLayout l = row_layout(C);
    const int nb = reduce_grid_x((const void *)smear_backward_kernel, N, l);
    layers_check_scratch(scratch, (size_t)nb * C * sizeof(float), who);
    float *partial = (float *)scratch.ptr;
    smear_backward_kernel<<<dim3(nb, l.slices), RED_THREADS, 0, stream>>>(dinp, partial, dout, inp, gate, N, T, C, l.TPR,
                                                                          l.RP, accumulate);
    cudaCheckLaunch();
    channel_partials_finalize(dgate, partial, nb, C, gate, stream);
}

// out (N, C) = mix[0] * x + mix[1] * x0; mix (2, C). out may be x or x0.
inline void resid_mix_forward(bf16 *out, const bf16 *x, const bf16 *x0, const float *mix, int N, int C,
                              cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "resid_mix_forward";
    layers_check_rowlen(C, who, "C");
    layers_check_aligned(out, who, "out");
    layers_check_aligned(x, who, "x");
    layers_check_aligned(x0, who, "x0");
    if (N <= 0) return;
    const RowLayout l = row_layout(C);
    resid_mix_forward_kernel<<<dim3(fwd_grid_x(N, l), l.slices), RED_THREADS, 0, stream>>>(out, x, x0, mix, N, C, l.TPR, l.RP);
    cudaCheckLaunch();
}
// dx (+)= mix[0] * dout, dx0 (+)= mix[1] * dout, dmix (2, C) += sums over rows. Pointwise: dx
// (or dx0) may be dout.
inline void resid_mix_backward(bf16 *dx, bf16 *dx0, float *dmix, const bf16 *dout, const bf16 *x, const bf16 *x0,
                               const float *mix, int N, int C, bool acc_dx, bool acc_dx0, DeviceScratch scratch,
                               cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "resid_mix_backward";
    layers_check_rowlen(C, who, "C");
    layers_require(dx && dx0, who, "dx and dx0 are both needed");
    layers_require(dx != dx0, who, "dx and dx0 must be different buffers");
    layers_check_aligned(dx, who, "dx");
    layers_check_aligned(dx0, who, "dx0");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(x, who, "x");
    layers_check_aligned(x0, who, "x0");
    if (N <= 0) return;
    const RowLayout l = row_layout(C);
    const int nb = reduce_grid_x((const void *)resid_mix_backward_kernel, N, l);
    layers_check_scratch(scratch, (size_t)nb * 2 * C * sizeof(float), who);
    float *partial = (float *)scratch.ptr;
    resid_mix_backward_kernel<<<dim3(nb, l.slices), RED_THREADS, 0, stream>>>(dx, dx0, partial, dout, x, x0, mix, N, C,
                                                                              l.TPR, l.RP, acc_dx, acc_dx0);
    cudaCheckLaunch();
    channel_partials_finalize(dmix, partial, nb, 2 * C, nullptr, stream);
}

// out (N, C) = x + scale * y, scale (C): attn_scale / mlp_scale updates and the skip add
// (scale = skip_weights[i]). out may be x or y.
inline void residual_scale_forward(bf16 *out, const bf16 *x, const float *scale, const bf16 *y, int N, int C,
                                   cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "residual_scale_forward";
    layers_check_rowlen(C, who, "C");
    layers_check_aligned(out, who, "out");
    layers_check_aligned(x, who, "x");
    layers_check_aligned(y, who, "y");
    if (N <= 0) return;
    const RowLayout l = row_layout(C);
    residual_scale_forward_kernel<<<dim3(fwd_grid_x(N, l), l.slices), RED_THREADS, 0, stream>>>(out, x, scale, y, N, C,
                                                                                                l.TPR, l.RP);
    cudaCheckLaunch();
}
// dx (+)= dout (dx may be null: the caller keeps using dout, it is the same gradient; dx = dout
// without accumulate is skipped too); dy (+)= scale * dout; dscale (C) += sum over rows of
// dout * y. Pointwise: dy may be dout (then dx must be null or dout).
inline void residual_scale_backward(bf16 *dx, float *dscale, bf16 *dy, const bf16 *dout, const float *scale,
                                    const bf16 *y, int N, int C, bool acc_dx, bool acc_dy, DeviceScratch scratch,
                                    cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "residual_scale_backward";
    layers_check_rowlen(C, who, "C");
    layers_require(dy != nullptr, who, "dy is needed");
    layers_require(!(dy == dout && dx && dx != dout), who, "with dy = dout, dx must be null or dout");
    if (dx) layers_check_aligned(dx, who, "dx");
    layers_check_aligned(dy, who, "dy");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(y, who, "y");
    if (N <= 0) return;
    const RowLayout l = row_layout(C);
    const int nb = reduce_grid_x((const void *)residual_scale_backward_kernel, N, l);
    layers_check_scratch(scratch, (size_t)nb * C * sizeof(float), who);
    float *partial = (float *)scratch.ptr;
    residual_scale_backward_kernel<<<dim3(nb, l.slices), RED_THREADS, 0, stream>>>(
        dx == dout && !acc_dx ? nullptr : dx, dy, partial, dout, scale, y, N, C, l.TPR, l.RP, acc_dx, acc_dy);
    cudaCheckLaunch();
    channel_partials_finalize(dscale, partial, nb, C, nullptr, stream);
}

// ----------------------------------------------------------------------------
// the residual scales folded into the projections that feed them: fold_scale_transpose,
// fold_scale_grad. CPU twins: fold_scale_transpose_cpu / fold_scale_grad_cpu
//
// A block adds its attention and MLP outputs as out = x + scale * (a W^T) (a: the XSA/attention
// output or relu^2, W: the proj weight (C, K), scale (C): attn_scale / mlp_scale). The backward
// needs d a = (scale * dout) W, dW = (scale * dout)^T a and dscale = sum over rows of dout * (a W^T).
// Folded, no pass over the (N, C) activations is left: d a = dout (diag(scale) W), one GEMM on a
// weight scaled once per step (fold_scale_transpose, stored transposed: (K, C) is the K-major
// operand the fused relu^2 GEMM wants); and from G = dout^T a (C, K), the unscaled weight
// gradient, dW += scale * G (rows) and dscale[c] += sum_k G[c, k] W[c, k], since
// sum_n dout[n, c] (a W^T)[n, c] = sum_k (dout^T a)[c, k] W[c, k] (fold_scale_grad). What it saves
// at the seed shape: two residual_scale_backward passes a layer (dy = scale * dout and the
// dscale sums: 302 MB each), and the proj outputs need not be kept for the backward.
// The scale is rounded to bf16 as everywhere (the reference casts it to the activation dtype).

// wt (K, C) = bf16(scale[c] * w[c, k]), w (C, K): 32 x 32 tiles through shared memory
__global__ void fold_scale_transpose_kernel(bf16 *__restrict__ wt, const bf16 *__restrict__ w, const float *__restrict__ scale,
                                            int C, int K) {
    __shared__ float tile[32][33];
    const int k0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {  // rows c0 + r of w, columns k0 + threadIdx.x
        const int c = c0 + r, k = k0 + threadIdx.x;
        if (c < C && k < K) tile[r][threadIdx.x] = lyr::rnd(scale[c]) * __bfloat162float(w[(size_t)c * K + k]);
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {  // rows k0 + r of wt, columns c0 + threadIdx.x
        const int k = k0 + r, c = c0 + threadIdx.x;
        if (c < C && k < K) wt[(size_t)k * C + c] = __float2bfloat16(tile[threadIdx.x][r]);
    }
}

// one block per row c: dw[c, :] += rnd(scale[c]) * g[c, :]; dscale[c] += sum_k g[c, k] w[c, k]
// (each thread's strided sum, then block_sum's fixed butterfly order: deterministic)
constexpr int FOLD_THREADS = 256;
__global__ void __launch_bounds__(FOLD_THREADS) fold_scale_grad_kernel(float *__restrict__ dw, float *__restrict__ dscale,
                                                                       const float *__restrict__ g,
                                                                       const float *__restrict__ scale,
                                                                       const bf16 *__restrict__ w, int K) {
    __shared__ float sh[32];
    const int c = blockIdx.x;
    const float s = lyr::rnd(scale[c]);
    const size_t row = (size_t)c * K;
    float acc = 0.f;
    for (int k = threadIdx.x; k < K; k += FOLD_THREADS) {
        const float gv = g[row + k];
        dw[row + k] += s * gv;
#ifdef BREAK_FOLD_GRAD  // a deliberately wrong variant (dev/broken_variants.sh): the scale's sum skips every other column
        if (k % 2) continue;
#endif
        acc += gv * __bfloat162float(w[row + k]);
    }
    const float t = lyr::block_sum(acc, sh);
    if (threadIdx.x == 0) dscale[c] += t;
}

// wt (K, C) = (diag(bf16(scale)) w)^T in bf16: w (C, K) the proj weight as the GEMMs read it
// (bf16, fake-quantized under QAT), scale (C). Once per weight refresh, not per micro-step.
inline void fold_scale_transpose(bf16 *wt, const bf16 *w, const float *scale, int C, int K, cudaStream_t stream) {
    ProfScope prof_(PROF_OPTIM, stream);
    layers_require(C >= 0 && K >= 0 && wt != w, "fold_scale_transpose", "needs C, K >= 0 and wt apart from w");
    if (C == 0 || K == 0) return;
    fold_scale_transpose_kernel<<<dim3(ceil_div(K, 32), ceil_div(C, 32)), dim3(32, 8), 0, stream>>>(wt, w, scale, C, K);
    cudaCheckLaunch();
}
// dw (C, K) += rnd(scale) * g (rows); dscale (C) += sum_k g[c, k] w[c, k]: g (C, K) = dout^T a, the
// unscaled weight gradient of this micro-step (fp32), w (C, K) bf16 as the forward used it.
// Parameter gradients accumulate, as everywhere.
inline void fold_scale_grad(float *dw, float *dscale, const float *g, const float *scale, const bf16 *w, int C, int K,
                            cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    layers_require(C >= 0 && K >= 0, "fold_scale_grad", "needs C, K >= 0");
    if (C == 0 || K == 0) return;
    fold_scale_grad_kernel<<<C, FOLD_THREADS, 0, stream>>>(dw, dscale, g, scale, w, K);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// a residual update fused with the rmsnorm that reads it: resid_mix_rmsnorm_forward,
// residual_scale_rmsnorm_forward. CPU twin: resid_mix_forward_cpu or residual_scale_forward_cpu,
// then rmsnorm_forward_cpu (the backward is the unfused ops')

// The values these forwards store, as explicit operations (no multiply-add contraction left to
// the compiler), each rounded to bf16 as stored: x + s * y (residual_scale_forward's), and x_in =
// m0 * r + m1 * x0 (resid_mix's); the parameters bf16-rounded by the caller. block_start_forward
// and the backward's recompute of ln (rmsnorm_resid_mix_backward, version 2) call them too, so all
// three give the same bits.
__device__ __forceinline__ float residual_scale_value(float x, float s, float y) { return lyr::rnd(__fmaf_rn(s, y, x)); }
__device__ __forceinline__ float resid_mix_value(float m0, float r, float m1, float x0) {
    return lyr::rnd(__fmaf_rn(m0, r, __fmul_rn(m1, x0)));
}

// The residual update fused with the rmsnorm that reads it (one pass instead of two):
//   MODE 1 (resid_mix):      v = mix[0] * a + mix[1] * b     (a = x, b = x0, p = mix (2, C))
//   MODE 2 (residual_scale): v = a + scale * b               (a = x, b = y, p = scale (C))
// resid = v (bf16), ln = scale_ln * rmsnorm(v) computed from the bf16-rounded v (what the unfused
// rmsnorm would read, and what its backward reads), rstd = the norm's 1/rms. One warp per row,
// each warp FUSED_ROWS rows; the block loads the parameters once, into shared memory.
constexpr int FUSED_ROWS = 4;
template <int MODE>
__global__ void __launch_bounds__(ROW_WARPS * 32) residual_rmsnorm_forward_kernel(bf16 *resid, bf16 *ln, float *rstd,
                                                                                   const bf16 *a, const bf16 *b,
                                                                                   const float *p, int N, int C,
                                                                                   float scale_ln) {
    constexpr int K = 2;  // 8-value vectors per lane kept in registers (C <= 512)
    const int lane = threadIdx.x & 31, CV = C / 8;
    // the first K*256 channels' parameters, bf16-rounded as the reference uses them, in shared
    // memory (in registers they would cost 32 of them, and occupancy)
    __shared__ __align__(16) float sp[2][K * 256];
    for (int i = threadIdx.x; i < K * 256; i += blockDim.x) {
        sp[0][i] = i < C ? lyr::rnd(p[i]) : 0.f;
        sp[1][i] = (MODE == 1 && i < C) ? lyr::rnd(p[C + i]) : 0.f;
    }
    __syncthreads();
    auto combine = [&](float av, float bv, float q0, float q1) {
        return MODE == 1 ? resid_mix_value(q0, av, q1, bv) : residual_scale_value(av, q0, bv);  // as stored
    };
    const int nwarps = gridDim.x * ROW_WARPS;
    for (int n = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); n < N; n += nwarps) {
        const size_t row = (size_t)n * C;
        float v[K][8];
        float ss = 0.f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int cv = k * 32 + lane;
            if (cv < CV) {
                float x[8], y[8], q0[8], q1[8];
                lyr::load8(x, a + row + cv * 8);
                lyr::load8(y, b + row + cv * 8);
                *reinterpret_cast<float4 *>(q0) = *reinterpret_cast<const float4 *>(&sp[0][cv * 8]);
                *reinterpret_cast<float4 *>(q0 + 4) = *reinterpret_cast<const float4 *>(&sp[0][cv * 8 + 4]);
                if (MODE == 1) {
                    *reinterpret_cast<float4 *>(q1) = *reinterpret_cast<const float4 *>(&sp[1][cv * 8]);
                    *reinterpret_cast<float4 *>(q1 + 4) = *reinterpret_cast<const float4 *>(&sp[1][cv * 8 + 4]);
                }
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    v[k][j] = combine(x[j], y[j], q0[j], MODE == 1 ? q1[j] : 0.f);
                    ss += v[k][j] * v[k][j];
                }
                lyr::store8(resid + row + cv * 8, v[k]);
            }
        }
        for (int cv = K * 32 + lane; cv < CV; cv += 32) {  // longer rows: parameters per row, v read back
            float x[8], y[8];
            lyr::load8(x, a + row + cv * 8);
            lyr::load8(y, b + row + cv * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int c = cv * 8 + j;
                x[j] = combine(x[j], y[j], lyr::rnd(p[c]), MODE == 1 ? lyr::rnd(p[C + c]) : 0.f);
                ss += x[j] * x[j];
            }
            lyr::store8(resid + row + cv * 8, x);
        }
        // the rest of the row's values are this lane's own stores to resid, read back
        rmsnorm_row_finish<K>(ln + row, rstd, resid + row, v, ss, n, C, CV, lane, scale_ln);
    }
}

inline void residual_rmsnorm_check(bf16 *resid, bf16 *ln, const bf16 *a, const bf16 *b, int C, const char *who) {
    layers_check_rowlen(C, who, "C");
    layers_require(resid != ln, who, "resid and ln must be different buffers");
    layers_check_aligned(resid, who, "resid");
    layers_check_aligned(ln, who, "ln");
    layers_check_aligned(a, who, "x");
    layers_check_aligned(b, who, "x0/y");
}
inline int residual_rmsnorm_grid(int N) { return std::max(1, ceil_div(N, (long)ROW_WARPS * FUSED_ROWS)); }

// x_in = mix[0] * x + mix[1] * x0 (resid_mix_forward), then ln = scale * rmsnorm(x_in) with rstd
// (rmsnorm_forward), in one pass. x_in may be x or x0; rstd may be null.
inline void resid_mix_rmsnorm_forward(bf16 *x_in, bf16 *ln, float *rstd, const bf16 *x, const bf16 *x0, const float *mix,
                                      int N, int C, float scale, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    residual_rmsnorm_check(x_in, ln, x, x0, C, "resid_mix_rmsnorm_forward");
    if (N <= 0) return;
    residual_rmsnorm_forward_kernel<1><<<residual_rmsnorm_grid(N), ROW_WARPS * 32, 0, stream>>>(x_in, ln, rstd, x, x0, mix,
                                                                                               N, C, scale);
    cudaCheckLaunch();
}
// out = x + rscale * y (residual_scale_forward, rscale (C)), then ln = scale * rmsnorm(out) with
// rstd, in one pass. out may be x or y; rstd may be null.
inline void residual_scale_rmsnorm_forward(bf16 *out, bf16 *ln, float *rstd, const bf16 *x, const float *rscale,
                                           const bf16 *y, int N, int C, float scale, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    residual_rmsnorm_check(out, ln, x, y, C, "residual_scale_rmsnorm_forward");
    if (N <= 0) return;
    residual_rmsnorm_forward_kernel<2><<<residual_rmsnorm_grid(N), ROW_WARPS * 32, 0, stream>>>(out, ln, rstd, x, y, rscale,
                                                                                               N, C, scale);
    cudaCheckLaunch();
}

// The step from one block to the next in one pass (the forward's block_start_forward):
//   out  = a + rscale * b                 the previous block's output (its MLP residual), stored
//   r    = out (+ skip_w * enc, SKIP)     the next block's input (a U-Net skip: not stored)
//   x_in = mix[0] * r + mix[1] * x0       stored; ln = scale * rmsnorm(x_in) with rstd
// each value rounded where residual_scale_forward, residual_scale_forward (the skip) and
// resid_mix_rmsnorm_forward store it, so the results are theirs bit for bit. Moves 6 N*C (7 with
// the skip) instead of 7 (10). One warp per row of C <= 512 channels (2 vectors a lane).
constexpr int BLOCK_START_MAX_C = 512;
template <bool SKIP>
__global__ void __launch_bounds__(ROW_WARPS * 32) block_start_forward_kernel(
    bf16 *out, bf16 *x_in, bf16 *ln, float *rstd, const bf16 *a, const float *rscale, const bf16 *b, const bf16 *enc,
    const float *skip_w, const bf16 *x0, const float *mix, int N, int C, float scale_ln, bool enc_is_out) {
    constexpr int K = 2;
    const int lane = threadIdx.x & 31, CV = C / 8;
    __shared__ __align__(16) float sp[4][K * 256];  // rscale, skip_w, mix[0], mix[1], bf16-rounded
    for (int i = threadIdx.x; i < K * 256; i += blockDim.x) {
        sp[0][i] = i < C ? lyr::rnd(rscale[i]) : 0.f;
        sp[1][i] = SKIP && i < C ? lyr::rnd(skip_w[i]) : 0.f;
        sp[2][i] = i < C ? lyr::rnd(mix[i]) : 0.f;
        sp[3][i] = i < C ? lyr::rnd(mix[C + i]) : 0.f;
    }
    __syncthreads();
    for (int n = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); n < N; n += gridDim.x * ROW_WARPS) {
        const size_t row = (size_t)n * C;
        float v[K][8];
        float ss = 0.f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int cv = k * 32 + lane;
            if (cv < CV) {
                const int c = cv * 8;
                float x[8], y[8], e[8], z[8];
                lyr::load8(x, a + row + c);
                lyr::load8(y, b + row + c);
                if (SKIP && !enc_is_out) lyr::load8(e, enc + row + c);
                lyr::load8(z, x0 + row + c);
#pragma unroll
                for (int j = 0; j < 8; j++) x[j] = residual_scale_value(x[j], sp[0][c + j], y[j]);  // residual_scale_forward
                lyr::store8(out + row + c, x);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    float r = x[j];
                    if (SKIP) r = residual_scale_value(r, sp[1][c + j], enc_is_out ? x[j] : e[j]);  // the skip: residual_scale_forward
#ifdef BREAK_BLOCK_START  // a deliberately wrong variant (dev/broken_variants.sh): x0's mix weight is mix[0]'s
                    v[k][j] = resid_mix_value(sp[2][c + j], r, sp[2][c + j], z[j]);
#else
                    v[k][j] = resid_mix_value(sp[2][c + j], r, sp[3][c + j], z[j]);  // resid_mix (combine, MODE 1)
#endif
                    ss += v[k][j] * v[k][j];
                }
                lyr::store8(x_in + row + c, v[k]);
            }
        }
        rmsnorm_row_finish<K>(ln + row, rstd, x_in + row, v, ss, n, C, CV, lane, scale_ln);
    }
}

// Whether block_start_forward takes rows of C channels (else: residual_scale_forward, the skip's
// residual_scale_forward, resid_mix_rmsnorm_forward)
inline bool block_start_fusable(int C) { return C > 0 && C % 8 == 0 && C <= BLOCK_START_MAX_C; }

// out = a + rscale * b; x_in = mix[0] * (out (+ skip_w * enc)) + mix[1] * x0; ln = scale *
// rmsnorm(x_in), rstd (may be null). enc null: no skip; enc may be out (the first decoder block's
// skip is the last encoder block's output: read from the registers). x_in may be a (in place, row
// by row); out must be apart from the other inputs. CPU twins: residual_scale_forward_cpu, resid_mix_forward_cpu,
// rmsnorm_forward_cpu.
inline void block_start_forward(bf16 *out, bf16 *x_in, bf16 *ln, float *rstd, const bf16 *a, const float *rscale,
                                const bf16 *b, const bf16 *enc, const float *skip_w, const bf16 *x0, const float *mix, int N,
                                int C, float scale, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "block_start_forward";
    layers_require(block_start_fusable(C), who, "rows of at most 512 channels, a multiple of 8");
    layers_require(!enc || skip_w, who, "a skip needs skip_w");
    layers_require(out != a && out != b && out != x0 && out != x_in, who, "out must be apart from a, b, x0 and x_in");
    layers_require(x_in != ln && x_in != b && x_in != x0 && (!enc || x_in != enc), who, "x_in may alias a only");
    const void *ptrs[] = {out, x_in, ln, a, b, x0, enc};
    const char *names[] = {"out", "x_in", "ln", "a", "b", "x0", "enc"};
    for (int i = 0; i < 7; i++)
        if (ptrs[i] || i < 6) layers_check_aligned(ptrs[i], who, names[i]);
    if (N <= 0) return;
    const int grid = residual_rmsnorm_grid(N);
    if (enc)
        block_start_forward_kernel<true><<<grid, ROW_WARPS * 32, 0, stream>>>(out, x_in, ln, rstd, a, rscale, b, enc, skip_w, x0,
                                                                             mix, N, C, scale, enc == out);
    else
        block_start_forward_kernel<false><<<grid, ROW_WARPS * 32, 0, stream>>>(out, x_in, ln, rstd, a, rscale, b, enc, skip_w,
                                                                              x0, mix, N, C, scale, false);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// the backward of a block's start, x_in = mix[0] * resid + mix[1] * x0 then ln = s * rmsnorm(x_in),
// in one pass: rmsnorm_resid_mix_backward. CPU twin: rmsnorm_backward_cpu then
// resid_mix_backward_cpu (the unfused launchers: rmsnorm_backward_from_out, resid_mix_backward)

constexpr int RMB_MAX_K = 4;  // 8-value vectors per lane: rows of up to 1024 channels

// One warp per row, grid-stride over rows (a full wave: the partial sums' order is fixed):
//   g     = bf16(dres + the rmsnorm gradient from the output ln and rstd)   (d x_in, as the
//           unfused rmsnorm_backward_from_out stores it)
//   dres  = mix[0] * g,  dx0 (+)= mix[1] * g,  partial (2, C) += sums of g * resid, g * x0
// SKIP (a decoder block whose input takes a U-Net skip, resid = prev + w * enc): resid is
// recomputed here from prev and enc, rounded as residual_scale_forward stores it, and
// denc = w * dres, partial2 (C) += sums of dres * enc (residual_scale_backward's work).
// add (any block whose input is an encoder output that also feeds a skip): dres += add, as
// add_inplace would (add_is_denc: the add is this call's own denc, the first decoder block's case).
// Every value is rounded where the unfused launchers store it, so dres, dx0 and denc are theirs bit
// for bit (the parameter sums run in another order).
// RECOMPUTE (version 2, the default): ln is not read (one N*C bf16 tensor less to move, 1 of 8):
// it is rebuilt from the resid, x0 (and enc) this pass loads anyway, as the forward computed it:
// x_in = resid_mix_value (SKIP: of resid = residual_scale_value(prev, w, enc)), the helpers
// block_start_forward and resid_mix_rmsnorm_forward store x_in with, then ln = bf16(x_in * rs),
// rs = rstd * scale, as rmsnorm_row_finish computes it (rstd is the forward's r itself). So y, and
// everything after it, has version 1's bits, as long as resid, x0, enc and rstd are what that
// forward read and wrote (the model's backward passes them so).
// Lane owns channels (k * 32 + lane) * 8 .. + 8 for k < K, so its parameter-gradient sums stay in
// registers; the block adds its warps' sums in warp order. Rows of up to 512 channels (K <= 2) ask
// for 2 blocks an SM (at most 128 registers): the SKIP variant took 160 and ran one block an SM,
// 16 warps too few to keep enough loads in flight (ncu, H200: 2.58 TB/s against 3.59 without SKIP).
// At 128 it spills (ptxas, K = 2 SKIP: 240 bytes of spill stores in version 1, 24 in version 2).
// Version 2's first pass loads dln, resid, x0 (enc) of all the row's vectors before its math and
// keeps them as the 16-byte words loaded (half the registers of floats) for the second pass, which
// loads dres, dx0 (add) a vector at a time as version 1 does.

// v, opaque to the front end and placed after `after` is known (an empty asm: no instruction): the
// compiler keeps the 16-byte word and unpacks it again where it is used, rather than keep the 8
// floats an earlier unpack made (twice the registers) or unpack it ahead, live across what
// computes `after` (the division's slow-path call). Only an order: ptxas kept it (no spills at
// K = 1 SKIP, 96 bytes of spill stores without it)
__device__ __forceinline__ uint4 rmb_opaque(uint4 v, float after) {
    asm volatile("" : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w) : "f"(after));
    return v;
}

template <int K, bool SKIP, bool RECOMPUTE>
__global__ void __launch_bounds__(ROW_WARPS * 32, K <= 2 ? 2 : 1) rmsnorm_resid_mix_backward_kernel(
    bf16 *dres, bf16 *dx0, float *partial, const bf16 *dln, const bf16 *ln, const float *rstd, const bf16 *resid,
    const bf16 *x0, const float *mix, int N, int C, float scale, bool acc_dx0, const bf16 *enc, const float *skip_w,
    bf16 *denc, float *partial2, const bf16 *add, bool add_is_denc) {
    static_assert(ROW_WARPS * 32 == 256, "the partial sums take 256 channels a round");
    __shared__ float sh[ROW_WARPS][32 * 8 + 1];
    // mix (and the skip weights), bf16-rounded as the reference uses them (registers would cost occupancy)
    __shared__ float sm[SKIP ? 3 : 2][K * 256];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, CV = C / 8;
    for (int i = threadIdx.x; i < K * 256; i += blockDim.x) {
        sm[0][i] = i < C ? lyr::rnd(mix[i]) : 0.f;
        sm[1][i] = i < C ? lyr::rnd(mix[C + i]) : 0.f;
        if (SKIP) sm[SKIP ? 2 : 0][i] = i < C ? lyr::rnd(skip_w[i]) : 0.f;
    }
    __syncthreads();
    float acc0[K][8], acc1[K][8], acc2[SKIP ? K : 1][8];
#pragma unroll
    for (int k = 0; k < K; k++) {
        lyr::zero8(acc0[k]);
        lyr::zero8(acc1[k]);
        if (SKIP) lyr::zero8(acc2[SKIP ? k : 0]);
    }
    // one vector of a row once the row's dot is known, both versions: g (in: dres) = d x_in, then
    // dres, dx0 (o0 in: the old dx0 or 0), denc stored and the parameter sums added; xr: resid
    // (SKIP: recomputed), e: enc, ad: add (unless add_is_denc)
    auto vector_out = [&](int k, int cv, size_t at, float (&g)[8], const float (&dy)[8], const float (&y)[8],
                          const float (&xr)[8], const float (&xz)[8], float (&o0)[8], const float (&e)[8], float (&ad)[8],
                          float a, float b) {
        float o[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            g[j] = lyr::rnd(g[j] + (a * dy[j] - b * y[j]));
#ifdef BREAK_RMSNORM_MIX  // a deliberately wrong variant (dev/broken_variants.sh): dres's own gradient dropped
            g[j] = lyr::rnd(a * dy[j] - b * y[j]);
#endif
            o[j] = sm[0][cv * 8 + j] * g[j];
            o0[j] += sm[1][cv * 8 + j] * g[j];
            acc0[k][j] += g[j] * xr[j];
            acc1[k][j] += g[j] * xz[j];
        }
        if (SKIP || add) {
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = lyr::rnd(o[j]);  // d resid as stored
        }
        if (SKIP) {
            float de[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
#ifdef BREAK_RMB_SKIP  // a deliberately wrong variant (dev/broken_variants.sh): the skip's gradient takes mix[0] for its weight
                de[j] = lyr::rnd(sm[0][cv * 8 + j] * o[j]);
#else
                de[j] = lyr::rnd(sm[SKIP ? 2 : 0][cv * 8 + j] * o[j]);  // as residual_scale_backward's dy
#endif
                acc2[SKIP ? k : 0][j] += o[j] * e[j];
                if (add_is_denc) ad[j] = de[j];
            }
            lyr::store8(denc + at, de);
        }
        if (add) {
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] += ad[j];  // as add_inplace
        }
        lyr::store8(dres + at, o);
        lyr::store8(dx0 + at, o0);
    };
    if constexpr (RECOMPUTE) {
        constexpr int KE = SKIP ? K : 1;
        const bool load_add = add && !add_is_denc;
        // x_in as the forward stored it, from the resid it read (bf16-rounded mix m0, m1)
        auto x_in = [](float m0, float xr, float m1, float xz) {
#ifdef BREAK_RMB_RECOMPUTE  // a deliberately wrong variant (dev/broken_variants.sh): x_in normalized before its rounding to bf16
            return __fmaf_rn(m0, xr, __fmul_rn(m1, xz));
#else
            return resid_mix_value(m0, xr, m1, xz);
#endif
        };
        for (int n = blockIdx.x * ROW_WARPS + w; n < N; n += gridDim.x * ROW_WARPS) {  // warp-uniform
            const size_t row = (size_t)n * C;
            const float r = rstd[n], rs = r * scale;  // rs: rmsnorm_row_finish's
            // the loads the dot needs, every vector's before any math: dln, resid (SKIP: prev), x0, enc
            uint4 ud[K], ur[K], uz[K], ue[KE];
#pragma unroll
            for (int k = 0; k < K; k++) {
                const int cv = k * 32 + lane;
                if (cv < CV) {
                    const size_t at = row + cv * 8;
                    ud[k] = lyr::load_word(dln + at);
                    ur[k] = lyr::load_word(resid + at);
                    uz[k] = lyr::load_word(x0 + at);
                    if constexpr (SKIP) ue[SKIP ? k : 0] = lyr::load_word(enc + at);
                }
            }
            // y = ln rebuilt, and sum(y * dy) in rmsnorm_row_load_dot's order
            float dot = 0.f;
#pragma unroll
            for (int k = 0; k < K; k++) {
                const int cv = k * 32 + lane;
                if (cv < CV) {
                    float dy[8], xr[8], xz[8];
                    lyr::unpack8(dy, ud[k]);
                    lyr::unpack8(xr, ur[k]);
                    lyr::unpack8(xz, uz[k]);
                    if constexpr (SKIP) {
                        float e[8];
                        lyr::unpack8(e, ue[SKIP ? k : 0]);
#pragma unroll
                        for (int j = 0; j < 8; j++) xr[j] = residual_scale_value(xr[j], sm[SKIP ? 2 : 0][cv * 8 + j], e[j]);
                        ur[k] = lyr::pack8(xr);  // the resid from here on (bf16 values: exact)
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const float y = lyr::rnd(x_in(sm[0][cv * 8 + j], xr[j], sm[1][cv * 8 + j], xz[j]) * rs);
                        dot += y * dy[j];
                    }
                }
            }
            dot = lyr::warp_sum(dot);
            const float a = scale * r, b = r * dot / (scale * (float)C);  // as rmsnorm_backward_kernel<FROM_OUT>
#pragma unroll
            for (int k = 0; k < K; k++) {
                const int cv = k * 32 + lane;
                if (cv < CV) {
                    // the words again (y rebuilt again too: cheaper than keeping it)
                    float g[8], dy[8], y[8], xr[8], xz[8], o0[8], e[8], ad[8];
                    lyr::unpack8(dy, rmb_opaque(ud[k], b));
                    lyr::unpack8(xr, rmb_opaque(ur[k], b));
                    lyr::unpack8(xz, rmb_opaque(uz[k], b));
                    if constexpr (SKIP) lyr::unpack8(e, rmb_opaque(ue[SKIP ? k : 0], b));
#pragma unroll
                    for (int j = 0; j < 8; j++) y[j] = lyr::rnd(x_in(sm[0][cv * 8 + j], xr[j], sm[1][cv * 8 + j], xz[j]) * rs);
                    const size_t at = row + cv * 8;
                    lyr::unpack8(g, rmb_opaque(lyr::load_word(dres + at), b));
                    if (acc_dx0) lyr::unpack8(o0, rmb_opaque(lyr::load_word(dx0 + at), b));
                    else lyr::zero8(o0);
                    if (load_add) lyr::unpack8(ad, rmb_opaque(lyr::load_word(add + at), b));
                    vector_out(k, cv, at, g, dy, y, xr, xz, o0, e, ad, a, b);
                }
            }
        }
    } else {
        for (int n = blockIdx.x * ROW_WARPS + w; n < N; n += gridDim.x * ROW_WARPS) {  // warp-uniform
            const size_t row = (size_t)n * C;
            float dy[K][8], y[K][8];
            const float dot = lyr::warp_sum(rmsnorm_row_load_dot<K>(dy, y, dln + row, ln + row, CV, lane));  // sum(y * dy)
            const float r = rstd[n];
            const float a = scale * r, b = r * dot / (scale * (float)C);  // as rmsnorm_backward_kernel<FROM_OUT>
#pragma unroll
            for (int k = 0; k < K; k++) {
                const int cv = k * 32 + lane;
                if (cv < CV) {
                    const size_t at = row + cv * 8;
                    float g[8], xr[8], xz[8], o0[8], e[8], ad[8];
                    lyr::load8(g, dres + at);
                    lyr::load8(xr, resid + at);  // SKIP: prev
                    lyr::load8(xz, x0 + at);
                    if (acc_dx0) lyr::load8(o0, dx0 + at);
                    else lyr::zero8(o0);
                    if (SKIP) lyr::load8(e, enc + at);
                    if (add && !add_is_denc) lyr::load8(ad, add + at);
                    if (SKIP) {  // resid as residual_scale_forward_kernel stores it
#pragma unroll
                        for (int j = 0; j < 8; j++) xr[j] = residual_scale_value(xr[j], sm[SKIP ? 2 : 0][cv * 8 + j], e[j]);
                    }
                    vector_out(k, cv, at, g, dy[k], y[k], xr, xz, o0, e, ad, a, b);
                }
            }
        }
    }
    // the block's partial sums: per channel, the warps' sums in warp order
#pragma unroll
    for (int k = 0; k < K; k++) {
#pragma unroll
        for (int half = 0; half < (SKIP ? 3 : 2); half++) {
#pragma unroll
            for (int j = 0; j < 8; j++) sh[w][lane * 8 + j] = half == 0 ? acc0[k][j] : half == 1 ? acc1[k][j] : acc2[SKIP ? k : 0][j];
            __syncthreads();
            // thread t: channel (k * 32) * 8 + t of this round
            const int c = k * 256 + threadIdx.x;
            if (c < C) {
                float s = 0.f;
                for (int u = 0; u < ROW_WARPS; u++) s += sh[u][threadIdx.x];
                if (half < 2) partial[(size_t)blockIdx.x * 2 * C + (size_t)half * C + c] = s;
                else partial2[(size_t)blockIdx.x * C + c] = s;
            }
            __syncthreads();  // sh is rewritten by the next round
        }
    }
}

// Whether rmsnorm_resid_mix_backward takes rows of C channels (else run the two unfused launchers).
inline bool rmsnorm_resid_mix_fusable(int C) { return C > 0 && C % 8 == 0 && C <= RMB_MAX_K * 256; }
// f(integral_constant K, bool_constant SKIP, bool_constant RECOMPUTE) for the kernel's
// instantiations (K = 3 runs as 4)
template <typename F>
inline void rmb_with_k(int K, bool skip, bool recompute, F f) {
    auto with_k = [&](auto sc, auto rc) {
        if (K == 1) f(std::integral_constant<int, 1>(), sc, rc);
        else if (K == 2) f(std::integral_constant<int, 2>(), sc, rc);
        else f(std::integral_constant<int, 4>(), sc, rc);
    };
    auto with_skip = [&](auto rc) {
        if (skip) with_k(std::true_type(), rc);
        else with_k(std::false_type(), rc);
    };
    if (recompute) with_skip(std::true_type());
    else with_skip(std::false_type());
}

// Which kernel rmsnorm_resid_mix_backward runs: 2 recomputes ln from resid, x0 (and the skip) in
// registers (the default: one N*C bf16 tensor less to read), 1 reads the forward's kept ln.
// Developer knob: RMB_VERSION=1|2 in the environment, read once; the launcher's `version`
// argument (dev/layers.cu runs both in one process) overrides it. Both give the same bits.
constexpr int RMB_VERSION_DEFAULT = 2;
inline int rmb_version() {
    static const int v = 1 + env_choice("RMB_VERSION", {"1", "2"}, RMB_VERSION_DEFAULT - 1);
    return v;
}

// The blocks rmsnorm_resid_mix_backward launches (a full wave of its kernel, at most a warp a row;
// version as the launcher's). The parameter sums' order follows it: the two versions give the same
// dmix and dskip_w bits where it is the same (as compiled for sm_90a it is: both kernels take 106
// to 128 registers for rows of up to 512 channels, 2 blocks an SM, and over 128 above, 1).
inline int rmsnorm_resid_mix_blocks(int N, int C, bool skip, int version) {
    if (version == 0) version = rmb_version();
    int nb = 1;
    rmb_with_k(ceil_div(C / 8, 32), skip, version == 2, [&](auto kc, auto sc, auto rc) {
        const void *kern =
            (const void *)rmsnorm_resid_mix_backward_kernel<decltype(kc)::value, decltype(sc)::value, decltype(rc)::value>;
        nb = std::max(1, std::min(ceil_div(N, ROW_WARPS), full_wave_blocks(kern, ROW_WARPS * 32)));
    });
    return nb;
}

// The optional parts of rmsnorm_resid_mix_backward (null: absent).
struct ResidMixSkip {
    // a decoder block with a U-Net skip: resid = prev + skip_w * enc, recomputed (the resid argument
    // is then prev); denc = skip_w * d resid, dskip_w (C) += sums of d resid * enc
    const bf16 *enc = nullptr;
    const float *skip_w = nullptr;
    bf16 *denc = nullptr;
    float *dskip_w = nullptr;
    // the block's input is an encoder output that also feeds a skip: dres += add (the skip's
    // gradient); add may be denc of this same call
    const bf16 *add = nullptr;
};

// dres (N, C): in, the gradient of the block's x_in other than through ln (the residual path);
// out, the gradient of resid. dln: the gradient of ln = scale * rmsnorm(x_in) (kept ln, rstd from
// the forward). dx0 (+)= mix[1] * d x_in, dmix (2, C) += the mix gradient. The same results as
// rmsnorm_backward_from_out(dres, dln, ln, rstd, .., accumulate) then resid_mix_backward(dres, dx0,
// dmix, dres, resid, x0, mix, .., false, acc_dx0), in one pass: 8 N*C bf16 moved instead of 10
// (7 instead of 9 without acc_dx0). With sk.enc, also what residual_scale_forward(resid, prev,
// skip_w, enc) before and residual_scale_backward(null, dskip_w, denc, dres, skip_w, enc) after
// would do (10 N*C moved instead of 14); with sk.add, add_inplace(dres, add) after (9 instead of
// 11). CPU twins: the unfused ones' (rmsnorm_backward_cpu, resid_mix_backward_cpu,
// residual_scale_forward_cpu / _backward_cpu).
// version: 0 (rmb_version()), 1 or 2. Version 2 does not read ln (it may be null then): one N*C
// less in each count above. It rebuilds ln from resid, x0 (enc, skip_w), mix and rstd, so those
// must be exactly what the forward (resid_mix_rmsnorm_forward or block_start_forward, with this
// scale) read and wrote.
inline void rmsnorm_resid_mix_backward(bf16 *dres, bf16 *dx0, float *dmix, const bf16 *dln, const bf16 *ln,
                                       const float *rstd, const bf16 *resid, const bf16 *x0, const float *mix, int N,
                                       int C, float scale, bool acc_dx0, DeviceScratch scratch, cudaStream_t stream,
                                       const ResidMixSkip &sk = ResidMixSkip(), int version = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "rmsnorm_resid_mix_backward";
    layers_check_rowlen(C, who, "C");
    layers_require(rmsnorm_resid_mix_fusable(C), who, "rows of at most 1024 channels (else the unfused launchers)");
    layers_require(scale != 0.f, who, "scale must not be 0 (xhat = ln / scale)");
    layers_require(dres != dx0, who, "dres and dx0 must be different buffers");
    const bool skip = sk.enc != nullptr;
    layers_require(!skip || (sk.skip_w && sk.denc && sk.dskip_w), who, "a skip needs skip_w, denc and dskip_w");
    layers_require(!skip || (sk.denc != dres && sk.denc != dx0), who, "denc must be apart from dres and dx0");
    layers_require(!sk.add || (sk.add != dres && sk.add != dx0), who, "add must be apart from dres and dx0");
    const bool add_is_denc = skip && sk.add == sk.denc;
    if (version == 0) version = rmb_version();
    layers_require(version == 1 || version == 2, who, "version must be 0, 1 or 2");
    const bool recompute = version == 2;
    layers_require(recompute || ln, who, "version 1 reads ln");
    const void *ptrs[] = {dres, dx0, dln, ln, resid, x0, sk.enc, sk.denc, sk.add};
    const char *names[] = {"dres", "dx0", "dln", "ln", "resid", "x0", "enc", "denc", "add"};
    for (int i = 0; i < 9; i++)
        if (i < 6 || ptrs[i]) layers_check_aligned(ptrs[i], who, names[i]);
    if (N <= 0) return;
    const int nb = rmsnorm_resid_mix_blocks(N, C, skip, version);
    rmb_with_k(ceil_div(C / 8, 32), skip, recompute, [&](auto kc, auto sc, auto rc) {
        constexpr int KK = decltype(kc)::value;
        constexpr bool SK = decltype(sc)::value, RC = decltype(rc)::value;
        layers_check_scratch(scratch, (size_t)nb * (skip ? 3 : 2) * C * sizeof(float), who);
        float *partial = (float *)scratch.ptr, *partial2 = partial + (size_t)nb * 2 * C;
        rmsnorm_resid_mix_backward_kernel<KK, SK, RC><<<nb, ROW_WARPS * 32, 0, stream>>>(
            dres, dx0, partial, dln, ln, rstd, resid, x0, mix, N, C, scale, acc_dx0, sk.enc, sk.skip_w, sk.denc, partial2,
            sk.add, add_is_denc);
        cudaCheckLaunch();
        channel_partials_finalize(dmix, partial, nb, 2 * C, nullptr, stream);
        if (skip) channel_partials_finalize(sk.dskip_w, partial2, nb, C, nullptr, stream);
    });
}

// ----------------------------------------------------------------------------
// relu^2: out = max(x, 0)^2. CPU twin: relu2_forward_cpu / relu2_backward_cpu

__global__ void relu2_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, nv = n / 8;
    if (i < nv) {
        float x[8];
        lyr::load8(x, inp + i * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float r = fmaxf(x[j], 0.f);
            x[j] = r * r;
        }
        lyr::store8(out + i * 8, x);
    } else if (i < flat_items(n)) {
        const size_t e = nv * 8 + (i - nv);
        const float r = fmaxf(__bfloat162float(inp[e]), 0.f);
        out[e] = __float2bfloat16(r * r);
    }
}
// d/dx relu(x)^2 = 2 relu(x). FROM_OUT: inp is the forward's output relu(x)^2 (bf16, as kept),
// and relu(x) = sqrt(that).
template <bool FROM_OUT>
__device__ __forceinline__ float relu2_grad(float x, float d) {
#ifdef BREAK_RELU2_FROM_OUT  // a deliberately wrong variant (dev/broken_variants.sh): the output read as relu(x)
    return x > 0.f ? 2.f * x * d : 0.f;
#endif
    if (FROM_OUT) return x > 0.f ? 2.f * sqrtf(x) * d : 0.f;
    return x > 0.f ? 2.f * x * d : 0.f;
}
template <bool FROM_OUT>
__global__ void relu2_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n, bool accumulate) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, nv = n / 8;
    if (i < nv) {
        float x[8], d[8], o[8];
        lyr::load8(x, inp + i * 8);
        lyr::load8(d, dout + i * 8);
        if (accumulate) lyr::load8(o, dinp + i * 8);
        else lyr::zero8(o);
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] += relu2_grad<FROM_OUT>(x[j], d[j]);
        lyr::store8(dinp + i * 8, o);
    } else if (i < flat_items(n)) {
        const size_t e = nv * 8 + (i - nv);
        const float x = __bfloat162float(inp[e]), d = __bfloat162float(dout[e]);
        const float o = (accumulate ? __bfloat162float(dinp[e]) : 0.f) + relu2_grad<FROM_OUT>(x, d);
        dinp[e] = __float2bfloat16(o);
    }
}

// out (n) = max(inp, 0)^2; out may be inp
inline void relu2_forward(bf16 *out, const bf16 *inp, size_t n, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "relu2_forward";
    layers_check_aligned(out, who, "out");
    layers_check_aligned(inp, who, "inp");
    if (n == 0) return;
    relu2_forward_kernel<<<ceil_div(n / 8 + n % 8, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(out, inp, n);
    cudaCheckLaunch();
}
template <bool FROM_OUT>
inline void relu2_backward_launch(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n, bool accumulate,
                                  cudaStream_t stream, const char *who) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(inp, who, FROM_OUT ? "out" : "inp");
    if (n == 0) return;
    relu2_backward_kernel<FROM_OUT><<<ceil_div(n / 8 + n % 8, ELEM_THREADS), ELEM_THREADS, 0, stream>>>(dinp, dout, inp, n,
                                                                                                        accumulate);
    cudaCheckLaunch();
}
// dinp (+)= 2 * max(inp, 0) * dout; dinp may be dout
inline void relu2_backward(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n, bool accumulate, cudaStream_t stream) {
    relu2_backward_launch<false>(dinp, dout, inp, n, accumulate, stream, "relu2_backward");
}
// The same gradient from the forward's output out = relu(x)^2 (bf16) instead of x: 2 sqrt(out)
// dout. The model keeps relu^2 for the proj GEMM's weight gradient, so it need not keep (or
// square again) relu(x). In exact math equal to relu2_backward (CPU twin: relu2_backward_cpu on
// x); in bf16 sqrt(out) differs from relu(x) by at most about half a bf16 rounding. dinp may be dout.
inline void relu2_backward_from_out(bf16 *dinp, const bf16 *dout, const bf16 *out, size_t n, bool accumulate,
                                    cudaStream_t stream) {
    relu2_backward_launch<true>(dinp, dout, out, n, accumulate, stream, "relu2_backward_from_out");
}

// ----------------------------------------------------------------------------
// RoPE tables and the q/k path: rope_tables, qk_norm_rope_gain_forward/backward, qk_rope_gain_forward,
// qk_norm_rope_gain_backward_from_acc (+ qk_backward_from_acc_fits: dout from attention's fp32 dQ).
// CPU twins: rope_tables_cpu (model.h), qk_norm_rope_gain_forward_cpu / qk_norm_rope_gain_backward_cpu,
// qk_rope_gain_forward_cpu
//
// q/k: per-head rmsnorm, partial RoPE, gain. One lane per 8 values of a head-row (the (n, h) row
// of hd values): a head-row is a segment of hv = hd/8 consecutive lanes, and a warp takes
// rpw = 32/hv head-rows at a time (lanes past rpw*hv idle when hv does not divide 32). The head's
// sums go through shuffles (qk_seg_sum: every lane of the segment gets the same bits), the RoPE
// partners (dims i and i + rd/2, possibly in another lane) by shuffles when rd % 16 == 0 (the
// fast path: every hd), else through the warp's own shared memory (any even rd <= hd): no
// block-wide barrier in the loop.

constexpr int QK_PAD = 9;  // shared-memory stride of a lane's 8 values (odd: lanes hit different banks)

// The sum of x over the hv lanes of segment seg, added in lane order. All 32 lanes must call it.
__device__ __forceinline__ float qk_seg_sum(float x, int seg, int hv) {
    float t = 0.f;
    for (int u = 0; u < hv; u++) t += __shfl_sync(0xffffffffu, x, (seg * hv + u) & 31);
    return t;
}
// The RoPE partner of dim i (< rd) of the head-row whose first lane is lane0: dim i + half for
// i < half, i - half above. sm: the warp's values, lane-major with stride QK_PAD.
__device__ __forceinline__ float qk_partner(const float *sm, int lane0, int i, int half) {
    const int p = i < half ? i + half : i - half;
    return sm[(lane0 + p / 8) * QK_PAD + p % 8];
}

// The RoPE partners p of a lane's 8 values x: dim i + half for i < half, i - half for
// half <= i < rd (0 past rd). All 32 lanes call it. FAST (rd % 16 == 0): a lane's 8 dims lie in
// one part and their partners are the same 8 slots of lane v +- half/8 (one shuffle each; lanes
// past rd read themselves); else through the warp's shared memory sm (any even rd).
// The lane holding lane's RoPE partners on the fast path (rd % 16 == 0): v +- half/8, itself past rd.
__device__ __forceinline__ int qk_partner_lane(int lane, int v, int half) {
    const int q = half / 8;
    return (v < q ? lane + q : v < 2 * q ? lane - q : lane) & 31;
}
template <bool FAST>
__device__ __forceinline__ void qk_partners(float (&p)[8], const float (&x)[8], float *sm, int lane, int v, int half) {
    if (FAST) {
        const int src = qk_partner_lane(lane, v, half);
#pragma unroll
        for (int k = 0; k < 8; k++) p[k] = __shfl_sync(0xffffffffu, x[k], src);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) sm[lane * QK_PAD + k] = x[k];
        __syncwarp();
#pragma unroll
        for (int k = 0; k < 8; k++) p[k] = v * 8 + k < 2 * half ? qk_partner(sm, lane - v, v * 8 + k, half) : 0.f;
        __syncwarp();  // sm is rewritten by the next call
    }
}
// The fast path's RoPE table entries of a lane's 8 dims (rd % 16 == 0, 16-byte aligned tables):
// cs, sn point at the position's row; entries v*8.. for v*8 < half, v*8 - half.. up to rd, 0 past rd.
__device__ __forceinline__ void qk_coef_fast(float (&c)[8], float (&sn8)[8], const float *cs, const float *sn, int v,
                                             int half) {
    lyr::zero8(c);
    lyr::zero8(sn8);
    if (v * 8 < 2 * half) {
        const int j0 = v * 8 < half ? v * 8 : v * 8 - half;
        const float4 c0 = *reinterpret_cast<const float4 *>(cs + j0), c1 = *reinterpret_cast<const float4 *>(cs + j0 + 4);
        const float4 s0 = *reinterpret_cast<const float4 *>(sn + j0), s1 = *reinterpret_cast<const float4 *>(sn + j0 + 4);
        c[0] = c0.x, c[1] = c0.y, c[2] = c0.z, c[3] = c0.w, c[4] = c1.x, c[5] = c1.y, c[6] = c1.z, c[7] = c1.w;
        sn8[0] = s0.x, sn8[1] = s0.y, sn8[2] = s0.z, sn8[3] = s0.w, sn8[4] = s1.x, sn8[5] = s1.y, sn8[6] = s1.z, sn8[7] = s1.w;
    }
}
// For head-row hr (head hr % NH, position (hr / NH) % T): the RoPE table entries of a lane's 8
// dims, index i for i < half, i - half for half <= i < rd (0 past rd), and the return value: the
// head's gain as the reference uses it (1 without gain or for an inactive lane). FAST: 8
// consecutive entries from a multiple of 8, two 16-byte loads each (the launchers check the
// tables' alignment).
template <bool FAST>
__device__ __forceinline__ float qk_row_coef(float (&c)[8], float (&sn8)[8], const float *cos_t, const float *sin_t,
                                             const float *gain, int hr, bool active, int NH, int T, int v, int half) {
    const unsigned h = (unsigned)hr % (unsigned)NH, t = ((unsigned)hr / (unsigned)NH) % (unsigned)T;
    const float *cs = cos_t + (size_t)t * half, *sn = sin_t + (size_t)t * half;
    if (FAST) {
        qk_coef_fast(c, sn8, cs, sn, v, half);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int i = v * 8 + k, j = i < half ? i : i - half;
            c[k] = i < 2 * half ? cs[j] : 0.f;
            sn8[k] = i < 2 * half ? sn[j] : 0.f;
        }
    }
    return gain && active ? lyr::rnd(gain[h]) : 1.f;
}

// The per-head-row math, shared by the head-row kernels (v2) and the token-row kernels (v3). Every
// product and sum is an explicit _rn intrinsic, so the compiler cannot fuse them differently in
// the two kernels' different surroundings: both give the same bits. (These are the operations
// ptxas chose for the v2 kernels when they were written with plain * and +: their bits did not
// change.) Lane v of a head-row holds dims v*8 .. v*8+7.

// 1/rms of a head-row from the lane's 8 values: the lanes' sums of squares added in lane order.
__device__ __forceinline__ float qk_rstd(const float (&x)[8], int seg, int hv, int hd) {
    float s2 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) s2 = __fmaf_rn(x[k], x[k], s2);
    return rsqrtf(__fadd_rn(__fdiv_rn(qk_seg_sum(s2, seg, hv), (float)hd), (float)RMS_EPS));
}
// RoPE of one value by the part of the rotation its dim i lies in (y: the value, p: its partner,
// c / s: the table entries): i < half, x1 cos + x2 sin; half <= i < rd, -x1 sin + x2 cos. And the
// transpose, for the gradient: d1 cos - d2 sin; d1 sin + d2 cos.
// (qk_rot_lo / _hi, qk_rotT_lo / _hi: cuda_utils.cuh, shared with the fused q/k epilogue of
// matmul.cuh and the attention backward's k norm)

// o = g * RoPE(y) for the lane's 8 dims (p: their partners, c / sn: their table entries).
// LANE: rd % 16 == 0, so the lane's 8 dims lie in one part of the rotation: one branch per lane
// instead of one per value (the same arithmetic).
template <bool LANE = false>
__device__ __forceinline__ void qk_rope8(float (&o)[8], const float (&y)[8], const float (&p)[8], const float (&c)[8],
                                         const float (&sn)[8], float g, int v, int half, int rd) {
    if constexpr (LANE) {
        if (v * 8 < half)
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] = __fmul_rn(g, qk_rot_lo(y[k], p[k], c[k], sn[k]));
        else if (v * 8 < rd)
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] = __fmul_rn(g, qk_rot_hi(y[k], p[k], c[k], sn[k]));
        else
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] = __fmul_rn(g, y[k]);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int i = v * 8 + k;
            float val;
            if (i < half) val = qk_rot_lo(y[k], p[k], c[k], sn[k]);
            else if (i < rd) val = qk_rot_hi(y[k], p[k], c[k], sn[k]);
            else val = y[k];
            o[k] = __fmul_rn(g, val);
        }
    }
}
// The backward through gain and RoPE for the lane's 8 dims: dy = d loss / d xn = g * RoPE^T(d),
// and the lane's parts of sum(xn * dy) (pdot, the rmsnorm's) and of sum(d * RoPE(xn)) (pg, the
// gain's), each added in dim order. pd, py: the partners of d and y. LANE: as qk_rope8.
__device__ __forceinline__ void qk_grad1(float &dy, float &pdot, float &pg, float t, float rot, float d, float y, float g) {
    dy = __fmul_rn(g, t);
    pdot = __fmaf_rn(y, dy, pdot);
    pg = __fmaf_rn(d, rot, pg);
}
template <bool LANE = false>
__device__ __forceinline__ void qk_rope_grad8(float (&dy)[8], float &pdot, float &pg, const float (&d)[8],
                                              const float (&pd)[8], const float (&y)[8], const float (&py)[8],
                                              const float (&c)[8], const float (&sn)[8], float g, int v, int half, int rd) {
    pdot = 0.f, pg = 0.f;
    if constexpr (LANE) {
        if (v * 8 < half)
#pragma unroll
            for (int k = 0; k < 8; k++)
                qk_grad1(dy[k], pdot, pg, qk_rotT_lo(d[k], pd[k], c[k], sn[k]), qk_rot_lo(y[k], py[k], c[k], sn[k]), d[k], y[k], g);
        else if (v * 8 < rd)
#pragma unroll
            for (int k = 0; k < 8; k++)
                qk_grad1(dy[k], pdot, pg, qk_rotT_hi(d[k], pd[k], c[k], sn[k]), qk_rot_hi(y[k], py[k], c[k], sn[k]), d[k], y[k], g);
        else
#pragma unroll
            for (int k = 0; k < 8; k++) qk_grad1(dy[k], pdot, pg, d[k], y[k], d[k], y[k], g);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int i = v * 8 + k;
            float t, rot;  // RoPE^T(d)[i], RoPE(xn)[i]
            if (i < half) t = qk_rotT_lo(d[k], pd[k], c[k], sn[k]), rot = qk_rot_lo(y[k], py[k], c[k], sn[k]);
            else if (i < rd) t = qk_rotT_hi(d[k], pd[k], c[k], sn[k]), rot = qk_rot_hi(y[k], py[k], c[k], sn[k]);
            else t = d[k], rot = y[k];
            qk_grad1(dy[k], pdot, pg, t, rot, d[k], y[k], g);
        }
    }
}
// The backward from the forward's out instead of its xn (what the model keeps: out is attention's
// input anyway, so xn is never stored). With o = out = g RoPE(xn) and d = d loss / d out, per lane's
// 8 dims: dy = g RoPE^T(d) as qk_rope_grad8; pdo, the lane's part of sum(d * o), which is both the
// rmsnorm's sum(xn * dy) and g times the gain's sum(d * RoPE(xn)) (the rotation is orthogonal: no
// second sum); and o replaced by xn = RoPE^T(o) / g, for the rmsnorm's gradient. po: o's RoPE
// partners. ginv = 1 / g (qk_gain_inv). About the arithmetic of the backward from xn: the rotation
// moves from xn to out, the gain's sum goes. LANE: as qk_rope8.
template <bool LANE = false>
__device__ __forceinline__ void qk_out_grad8(float (&dy)[8], float &pdo, const float (&d)[8], const float (&pd)[8],
                                             float (&o)[8], const float (&po)[8], const float (&c)[8], const float (&sn)[8],
                                             float g, float ginv, int v, int half, int rd) {
    pdo = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int i = LANE ? v * 8 : v * 8 + k;  // LANE: the part of the rotation is the lane's
        float t, x;
        if (i < half) t = qk_rotT_lo(d[k], pd[k], c[k], sn[k]), x = qk_rotT_lo(o[k], po[k], c[k], sn[k]);
        else if (i < rd) t = qk_rotT_hi(d[k], pd[k], c[k], sn[k]), x = qk_rotT_hi(o[k], po[k], c[k], sn[k]);
        else t = d[k], x = o[k];
#ifdef BREAK_QK_FROM_OUT  // a deliberately wrong variant (dev/broken_variants.sh): out taken for xn without undoing RoPE
        x = o[k];
#endif
        dy[k] = __fmul_rn(g, t);
        pdo = __fmaf_rn(d[k], o[k], pdo);
        o[k] = __fmul_rn(x, ginv);
    }
}
// 1 / g for qk_out_grad8, and 0 where g = 0: there out is 0 and says nothing of xn, so xn reads 0.
// The input gradient stays exact (it is g times something); that head's gain gradient reads 0.
__device__ __forceinline__ float qk_gain_inv(float g) { return g != 0.f ? __frcp_rn(g) : 0.f; }
// dinp's 8 values: o (+)= r * (dy - y * m), m = mean(xn * dy) over the head-row
__device__ __forceinline__ void qk_norm_grad8(float (&o)[8], float r, const float (&dy)[8], const float (&y)[8], float m) {
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = __fmaf_rn(r, __fmaf_rn(-y[k], m, dy[k]), o[k]);
}

// normalize: out = gain * RoPE(xn) with xn = rmsnorm(inp) (xn, rstd stored when not null);
// !normalize: inp is xn already (qk_rope_gain_forward). RoPE reads xn rounded to bf16 as stored,
// so both give the same bits. Each warp takes QK_STEPS consecutive warp-steps (the grid covers
// all head-rows) and loads all of them before the math: QK_STEPS x 16 bytes in flight per lane
// instead of one dependent load -> shuffle -> store chain at a time. Head-row indices are 32-bit
// (the launchers check HR).
template <bool FAST>
__global__ void __launch_bounds__(QK_WARPS * 32) qk_norm_rope_gain_forward_kernel(
    bf16 *out, bf16 *xn_out, float *rstd, const bf16 *inp, const float *cos_t, const float *sin_t,
    const float *gain, int NH, int T, int hd, int rd, int HR, bool normalize) {
    __shared__ float sm[QK_WARPS][FAST ? 1 : 32 * QK_PAD];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int hv = hd / 8, rpw = 32 / hv, half = rd / 2;
    const int seg = lane / hv, v = lane % hv;
    const int row0 = (blockIdx.x * QK_WARPS + w) * QK_STEPS * rpw + seg;  // step u: head-row row0 + u * rpw
    uint4 raw[QK_STEPS];
#pragma unroll
    for (int u = 0; u < QK_STEPS; u++) {
        const int hr = row0 + u * rpw;
        raw[u] = seg < rpw && hr < HR ? lyr::load_word(inp + (size_t)hr * hd + v * 8) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < QK_STEPS; u++) {
        const int hr = row0 + u * rpw;
        const bool active = seg < rpw && hr < HR;
        const size_t at = (size_t)hr * hd + v * 8;
        float c[8], sn[8];
        const float g = qk_row_coef<FAST>(c, sn, cos_t, sin_t, gain, hr, active, NH, T, v, half);
        float x[8];
        lyr::unpack8(x, raw[u]);
        float r = 1.f;
        if (normalize) {
            r = qk_rstd(x, seg, hv, hd);
            if (active && rstd && v == 0) rstd[hr] = r;
        }
        float y[8], p[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            y[k] = lyr::rnd(__fmul_rn(x[k], r));  // RoPE reads xn as stored (bf16): the backward recomputes out from it
#ifdef BREAK_QK_RECOMPUTE  // a deliberately wrong variant (dev/broken_variants.sh): RoPE of the unrounded xn
            y[k] = x[k] * r;
#endif
        }
        qk_partners<FAST>(p, y, sm[w], lane, v, half);
        if (active) {
            if (xn_out) lyr::store8(xn_out + at, y);
            float o[8];
            qk_rope8(o, y, p, c, sn, g, v, half, rd);
            lyr::store8(out + at, o);
        }
    }
}

// dinp (+)= rmsnorm'(rope^T(gain * dout)); partial[block][h] = the block's sum over its head-rows
// of head h of dout . rope(xn) (only when partial is given). saved: the forward's xn, or with
// FROM_OUT its out (xn = rope^T(out) / gain, qk_out_grad8). Grid-stride over groups of
// QK_STEPS warp-steps per warp, all loads of a group (dout, saved, rstd, dinp when accumulating)
// issued before its math; the launcher makes the stride a multiple of NH head-rows, so each
// (step, segment) slot of each warp always sees the same head and keeps its gain sum in a register.
template <bool FAST, bool FROM_OUT>
__global__ void __launch_bounds__(QK_WARPS * 32) qk_norm_rope_gain_backward_kernel(
    bf16 *dinp, float *partial, const bf16 *dout, const bf16 *saved, const float *rstd, const float *cos_t,
    const float *sin_t, const float *gain, int NH, int T, int hd, int rd, int HR, bool accumulate) {
    __shared__ float sm[QK_WARPS][FAST ? 1 : 32 * QK_PAD];
    __shared__ float sg[QK_WARPS][QK_STEPS * 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int hv = hd / 8, rpw = 32 / hv, half = rd / 2;
    const int seg = lane / hv, v = lane % hv;
    const int gw = blockIdx.x * QK_WARPS + w, nw = gridDim.x * QK_WARPS;
    const int group = QK_STEPS * rpw;  // head-rows of a warp's group of steps
    float gacc[QK_STEPS];  // lane v == 0: the gain gradient of slot (u, seg)'s head
#pragma unroll
    for (int u = 0; u < QK_STEPS; u++) gacc[u] = 0.f;
    for (int base = gw * group + seg; base - seg < HR; base += nw * group) {  // warp-uniform condition
        uint4 rd8[QK_STEPS], ry8[QK_STEPS], ra8[QK_STEPS];
        float rs[QK_STEPS];
#pragma unroll
        for (int u = 0; u < QK_STEPS; u++) {
            const int hr = base + u * rpw;
            const size_t at = (size_t)hr * hd + v * 8;
            rd8[u] = ry8[u] = ra8[u] = make_uint4(0, 0, 0, 0);
            rs[u] = 0.f;
            if (seg < rpw && hr < HR) {
                rd8[u] = lyr::load_word(dout + at);
                ry8[u] = lyr::load_word(saved + at);
                rs[u] = rstd[hr];
                if (accumulate) ra8[u] = lyr::load_word(dinp + at);
            }
        }
#pragma unroll
        for (int u = 0; u < QK_STEPS; u++) {
            const int hr = base + u * rpw;
            const bool active = seg < rpw && hr < HR;
            const size_t at = (size_t)hr * hd + v * 8;
            float c[8], sn[8];
            const float g = qk_row_coef<FAST>(c, sn, cos_t, sin_t, gain, hr, active, NH, T, v, half);
            float d[8], y[8], pd[8], py[8];
            lyr::unpack8(d, rd8[u]);
            lyr::unpack8(y, ry8[u]);
            qk_partners<FAST>(pd, d, sm[w], lane, v, half);
            qk_partners<FAST>(py, y, sm[w], lane, v, half);
            float dy[8], pdot, pg;  // dy: d loss / d xn
            if constexpr (FROM_OUT) {  // y becomes xn
                const float ginv = qk_gain_inv(g);
                qk_out_grad8(dy, pdot, d, pd, y, py, c, sn, g, ginv, v, half, rd);
                pg = __fmul_rn(pdot, ginv);
            } else {
                qk_rope_grad8(dy, pdot, pg, d, pd, y, py, c, sn, g, v, half, rd);
            }
            const float dot = qk_seg_sum(pdot, seg, hv), gs = qk_seg_sum(pg, seg, hv);
            if (active) {
                const float m = __fdiv_rn(dot, (float)hd);
                float o[8];
                lyr::unpack8(o, ra8[u]);  // zeros unless accumulating
                qk_norm_grad8(o, rs[u], dy, y, m);
                lyr::store8(dinp + at, o);
                if (v == 0) gacc[u] += gs;
            }
        }
    }
    if (!partial) return;  // uniform over the grid
    if (v == 0 && seg < rpw)
#pragma unroll
        for (int u = 0; u < QK_STEPS; u++) sg[w][u * rpw + seg] = gacc[u];
    __syncthreads();
    if ((int)threadIdx.x < NH) {  // the block's slots of head threadIdx.x, in (warp, step, segment) order
        float s = 0.f;
        for (int ww = 0; ww < QK_WARPS; ww++)
            for (int j = 0; j < group; j++)
                if (((blockIdx.x * QK_WARPS + ww) * group + j) % NH == (int)threadIdx.x) s += sg[ww][j];
        partial[(size_t)blockIdx.x * NH + threadIdx.x] = s;
    }
}

// The token-row kernels (v3). A warp takes whole token rows, the NH * hd values of a position (q:
// 512, k: 256 at the seed), lane l owning the 8-value vectors k * 32 + l (k < K): head
// k * rpw + l / hv, dims (l % hv) * 8 ... The head-row segments are the lanes of the kernels above
// and the math is theirs (qk_rstd, qk_rope8, qk_rope_grad8, qk_norm_grad8: every output bit for
// bit), but a lane's head is fixed (its gain is read once), a row's position is one n % T and its
// cos / sin entries are read once for the row's K vectors, each lane's 8 dims lie in one part of
// the rotation (one branch, not eight), the RoPE partners move as bf16 pairs (4 shuffles, not 8),
// and the backward keeps its gain sums per lane (no shuffles per row). Loops are uniform over the
// block (rows past N compute on zeros and store nothing), so the shuffles need no divergence
// handling. Fewer registers and smaller blocks let more warps share an SM: each loads its rows
// before its math, and the warps' loads overlap each other's math. Needs hv | 32, rd % 16 == 0
// with 16-byte aligned tables and rows of at most QK3_MAX_K * 256 values (qk_v3_fits); other
// shapes run the head-row kernels above.
constexpr int QK3_WARPS = 4;       // warps per block (128 threads: finer steps of occupancy than 256)
constexpr int QK3_MAX_K = 4;       // 8-value vectors per lane and row: rows of up to 1024 values
constexpr int QK3_VECS = 2;        // vectors per lane a warp loads before its math (rows of K vectors)
constexpr int QK3_FWD_BLOCKS = 8;  // resident blocks per SM the forward is built for (<= 64 registers)
// the backward's (<= 80 registers; with more loads or vectors in flight, fewer blocks and no spills;
// ptxas: K = 2 from bf16 without accumulation spills 4 bytes since the backward from out came in,
// a shape the seed model does not run: its q reads the fp32 accumulator, its k has K = 1)
__host__ __device__ constexpr int qk3_bwd_blocks(int K, bool acc) { return K > 2 ? 4 : acc ? 5 : 6; }

// rows per warp at once: QK3_VECS / K, at least one
template <int K>
__host__ __device__ constexpr int qk3_rows() { return K >= QK3_VECS ? 1 : QK3_VECS / K; }

// The RoPE partners of 8 bf16 values held as 4 words (exact: the values are bf16 already)
__device__ __forceinline__ uint4 qk_partner_words(uint4 w, int src) {
    w.x = __shfl_sync(0xffffffffu, w.x, src);
    w.y = __shfl_sync(0xffffffffu, w.y, src);
    w.z = __shfl_sync(0xffffffffu, w.z, src);
    w.w = __shfl_sync(0xffffffffu, w.w, src);
    return w;
}
// 16 bytes of a tensor that is read once: evict-first, so it does not push the RoPE tables out of L1
__device__ __forceinline__ uint4 qk_load_stream(const bf16 *p) { return __ldcs(reinterpret_cast<const uint4 *>(p)); }

// Vectors per lane whose loads the token-row backward issues before their math: all K of its R
// rows from bf16; from fp32 (8 registers a vector while it loads) half of them (K > 1), which
// keeps its registers at the bf16 kernel's bounds without spills. Each lane's gain sums still
// see the rows in the same order (one sum per vector), so dgain keeps its bits.
template <int K, typename DT>
__host__ __device__ constexpr int qk3_load_vectors() { return sizeof(DT) == 4 && K > 1 ? K / 2 : K; }

// bf16 words and floats for the token-row backward's second form: lyr::pack8's rounding of a pair
// (cvt.rn.bf16x2.f32, what __floats2bfloat162_rn is on sm_80+; lo in the low half) and
// lyr::unpack8's exact conversions, on 32-bit words: through __nv_bfloat162 the compiler splits
// a pair into halves and merges them again (PRMTs: one or two instructions more a word).
__device__ __forceinline__ unsigned qk3_pack2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ void qk3_unpack8(float (&f)[8], const uint4 &u) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; j++) f[2 * j] = __uint_as_float(w[j] << 16), f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
}

// The token-row backward's dout, a lane's 8 values of one vector, held from its load (ahead of the
// math) to the math: DT = bf16, the tensor's 16 bytes as they are; DT = float, 8 values of
// attention's fp32 dQ accumulator (qk_norm_rope_gain_backward_from_acc), rounded at the start of
// the math exactly as attention_backward_dq_kernel rounds them, bf16(acc * scale): one fp32
// multiply, then round to nearest even (__floats2bfloat162_rn, as its pack_bf16). From there on
// both run the same instructions on the same bf16 words, so the backward from the accumulator
// gives the bits of attention's dq pass followed by the bf16 backward, without that pass.
template <typename DT>
struct Qk3Dout;
template <>
struct Qk3Dout<bf16> {
    uint4 w;
    __device__ __forceinline__ void load(const bf16 *p, bool ok) { w = ok ? qk_load_stream(p) : make_uint4(0, 0, 0, 0); }
    __device__ __forceinline__ uint4 words(float) const { return w; }
    __device__ __forceinline__ uint4 words2(float) const { return w; }
};
template <>
struct Qk3Dout<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float *p, bool ok) {
        const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
        a = ok ? __ldcs(reinterpret_cast<const float4 *>(p)) : z;
        b = ok ? __ldcs(reinterpret_cast<const float4 *>(p) + 1) : z;
    }
    __device__ __forceinline__ uint4 words(float scale) const {
#ifdef BREAK_QK3_ACC  // a deliberately wrong variant (dev/broken_variants.sh): the accumulator's scale is not applied
        scale = 1.f;
#endif
        const float f[8] = {__fmul_rn(a.x, scale), __fmul_rn(a.y, scale), __fmul_rn(a.z, scale), __fmul_rn(a.w, scale),
                            __fmul_rn(b.x, scale), __fmul_rn(b.y, scale), __fmul_rn(b.z, scale), __fmul_rn(b.w, scale)};
        return lyr::pack8(f);  // __floats2bfloat162_rn pairs, (lo, hi) = (dim 2j, dim 2j + 1)
    }
    // words() for the second form (qk_backward_v3f_kernel): the same products and roundings,
    // packed by qk3_pack2
    __device__ __forceinline__ uint4 words2(float scale) const {
#ifdef BREAK_QK3_ACC  // a deliberately wrong variant (dev/broken_variants.sh): the accumulator's scale is not applied
        scale = 1.f;
#endif
        return make_uint4(qk3_pack2(__fmul_rn(a.x, scale), __fmul_rn(a.y, scale)), qk3_pack2(__fmul_rn(a.z, scale), __fmul_rn(a.w, scale)),
                          qk3_pack2(__fmul_rn(b.x, scale), __fmul_rn(b.y, scale)), qk3_pack2(__fmul_rn(b.z, scale), __fmul_rn(b.w, scale)));
    }
};

// A thread's place in the token-row kernels: warp w, lane; its vector k holds head k * rpw + seg,
// dims v * 8 .. v * 8 + 7 of it; lane src holds its RoPE partners; C values a token row.
struct Qk3Lane {
    int lane, w, hv, rpw, half, C, seg, v, src;
    __device__ __forceinline__ Qk3Lane(int NH, int hd, int rd)
        : lane(threadIdx.x & 31), w(threadIdx.x >> 5), hv(hd / 8), rpw(32 / hv), half(rd / 2), C(NH * hd), seg(lane / hv),
          v(lane % hv), src(qk_partner_lane(lane, v, half)) {}
    // the lane's cos / sin entries for token row n (position n % T)
    __device__ __forceinline__ void coef(float (&c)[8], float (&sn)[8], const float *cos_t, const float *sin_t, int n,
                                         int T) const {
        const unsigned t = (unsigned)n % (unsigned)T;
        qk_coef_fast(c, sn, cos_t + (size_t)t * half, sin_t + (size_t)t * half, v, half);
    }
};

// NORM: out = gain * RoPE(xn), xn = rmsnorm(inp) (xn, rstd stored when not null), as
// qk_norm_rope_gain_forward_kernel; !NORM: inp is xn (the recompute). One-shot blocks: warp w
// takes rows (blockIdx.x * QK3_WARPS + w) * R ... + R - 1.
template <int K, bool NORM>
__global__ void __launch_bounds__(QK3_WARPS * 32, QK3_FWD_BLOCKS) qk_forward_v3_kernel(
    bf16 *out, bf16 *xn_out, float *rstd, const bf16 *inp, const float *__restrict__ cos_t,
    const float *__restrict__ sin_t, const float *__restrict__ gain, int N, int NH, int T, int hd, int rd) {
    constexpr int R = qk3_rows<K>();
    const Qk3Lane L(NH, hd, rd);
    const int n0 = (blockIdx.x * QK3_WARPS + L.w) * R;
    uint4 raw[R][K];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int k = 0; k < K; k++)
            raw[r][k] = n0 + r < N && k * L.rpw + L.seg < NH
                            ? qk_load_stream(inp + (size_t)(n0 + r) * L.C + (k * 32 + L.lane) * 8) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int n = n0 + r;  // past N: zeros in, nothing out
        float c[8], sn[8];
        L.coef(c, sn, cos_t, sin_t, n, T);
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int h = k * L.rpw + L.seg;
            const bool active = n < N && h < NH;
            const size_t at = (size_t)n * L.C + (k * 32 + L.lane) * 8;
            float y[8];
            lyr::unpack8(y, raw[r][k]);
            uint4 yw = raw[r][k];  // y as bf16 words (inp is xn when !NORM)
            if (NORM) {
                const float rr = qk_rstd(y, L.seg, L.hv, hd);
                if (active && rstd && L.v == 0) rstd[(size_t)n * NH + h] = rr;
#pragma unroll
                for (int j = 0; j < 8; j++) y[j] = lyr::rnd(__fmul_rn(y[j], rr));  // xn as stored: RoPE reads it
                yw = lyr::pack8(y);  // exact: y is bf16 already
#ifdef BREAK_QK_RECOMPUTE  // a deliberately wrong variant (dev/broken_variants.sh): RoPE of the unrounded xn
                lyr::unpack8(y, raw[r][k]);
#pragma unroll
                for (int j = 0; j < 8; j++) y[j] *= rr;
#endif
            }
            float p[8];
            lyr::unpack8(p, qk_partner_words(yw, L.src));
            if (active) {
                if (NORM && xn_out) *reinterpret_cast<uint4 *>(xn_out + at) = yw;
#ifdef BREAK_QK3_FWD  // a deliberately wrong variant (dev/broken_variants.sh): every vector takes its k = 0 head's gain
                const float g = gain ? lyr::rnd(gain[L.seg]) : 1.f;
#else
                const float g = gain ? lyr::rnd(gain[h]) : 1.f;
#endif
                float o[8];
                qk_rope8<true>(o, y, p, c, sn, g, L.v, L.half, rd);
                lyr::store8(out + at, o);
            }
        }
    }
}

// The token-row backward's gain partials, both forms: partial[block][h] = the sum over the
// block's rows of head h's terms, from each lane's sums gacc (one per vector, rows in the grid's
// order): a head-row's lanes added in lane order, then the block's warps in warp order. Every
// thread of the block calls it (a block-wide barrier).
template <int K>
__device__ __forceinline__ void qk3_gain_partials(float *partial, const float (&gacc)[K], const Qk3Lane &L, int NH) {
    __shared__ float sg[QK3_WARPS][QK3_MAX_K * 32];  // the warps' gain sums per head (NH <= K * rpw)
#pragma unroll
    for (int k = 0; k < K; k++) {
        const float s = qk_seg_sum(gacc[k], L.seg, L.hv);
        if (L.v == 0 && k * L.rpw + L.seg < NH) sg[L.w][k * L.rpw + L.seg] = s;
    }
    __syncthreads();
    if ((int)threadIdx.x < NH) {  // head threadIdx.x: the warps' sums in warp order
        float s = 0.f;
#ifdef BREAK_QK3_BWD  // a deliberately wrong variant (dev/broken_variants.sh): the block's last warp is left out
        for (int ww = 0; ww < QK3_WARPS - 1; ww++) s += sg[ww][threadIdx.x];
#else
        for (int ww = 0; ww < QK3_WARPS; ww++) s += sg[ww][threadIdx.x];
#endif
        partial[(size_t)blockIdx.x * NH + threadIdx.x] = s;
    }
}

// dinp (+)= rmsnorm'(rope^T(gain * dout)), as qk_norm_rope_gain_backward_kernel (ACC: adds to
// dinp); partial[block][h] = the block's sum over its rows of head h's dout . rope(xn) (when
// partial is given); saved: xn, or with from_out the forward's out (as the head-row kernel). A
// full wave of blocks, grid-stride over groups of R rows per warp, each group's loads (dout,
// saved, rstd, dinp when ACC) issued before its math. A lane's gain sum stays
// in a register (its head is fixed); at the end a head-row's lanes are added in lane order, then
// the block's warps in warp order: deterministic for a given grid. DT: dout's type, bf16, or
// float for attention's dQ accumulator, bf16(dout * dout_scale) (Qk3Dout; unused for bf16).
template <int K, bool ACC, typename DT = bf16>
__global__ void __launch_bounds__(QK3_WARPS * 32, qk3_bwd_blocks(K, ACC)) qk_backward_v3_kernel(
    bf16 *dinp, float *partial, const DT *dout, float dout_scale, const bf16 *__restrict__ saved, bool from_out,
    const float *__restrict__ rstd,
    const float *__restrict__ cos_t, const float *__restrict__ sin_t, const float *__restrict__ gain, int N, int NH, int T,
    int hd, int rd) {
    constexpr int R = qk3_rows<K>(), KS = qk3_load_vectors<K, DT>();
    const Qk3Lane L(NH, hd, rd);
    float g[K], ginv[K], gacc[K];  // ginv: 1 / g, for from_out (qk_out_grad8)
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int h = k * L.rpw + L.seg;
        g[k] = gain && h < NH ? lyr::rnd(gain[h]) : 1.f;
        ginv[k] = qk_gain_inv(g[k]);
        gacc[k] = 0.f;
    }
    for (int base = blockIdx.x * QK3_WARPS * R; base < N; base += gridDim.x * QK3_WARPS * R) {  // uniform over the block
        const int n0 = base + L.w * R;
        // the vectors k0 .. k0 + KS - 1 of the R rows: loads, then math (KS = K but from fp32, see qk3_load_vectors)
#pragma unroll
        for (int k0 = 0; k0 < K; k0 += KS) {
            Qk3Dout<DT> rd8[R][KS];
            uint4 ry8[R][KS], ra8[R][KS];
            float rs[R][KS];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int j = 0; j < KS; j++) {
                    const int k = k0 + j;
                    const size_t at = (size_t)(n0 + r) * L.C + (k * 32 + L.lane) * 8;
                    const bool ok = n0 + r < N && k * L.rpw + L.seg < NH;
                    rd8[r][j].load(dout + at, ok);
                    ry8[r][j] = ok ? qk_load_stream(saved + at) : make_uint4(0, 0, 0, 0);
                    rs[r][j] = ok ? rstd[(size_t)(n0 + r) * NH + k * L.rpw + L.seg] : 0.f;
                    ra8[r][j] = ACC && ok ? qk_load_stream(dinp + at) : make_uint4(0, 0, 0, 0);
                }
            // dout as bf16 words, before the math: from fp32, a vector's 8 registers become 4 here,
            // not after the math of the rows before it
            uint4 dw8[R][KS];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int j = 0; j < KS; j++) dw8[r][j] = rd8[r][j].words(dout_scale);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int n = n0 + r;  // past N: zeros in, nothing out
                float c[8], sn[8];
                L.coef(c, sn, cos_t, sin_t, n, T);
#pragma unroll
                for (int j = 0; j < KS; j++) {
                    const int k = k0 + j;
                    float d[8], y[8], pd[8], py[8];
                    lyr::unpack8(d, dw8[r][j]);
                    lyr::unpack8(y, ry8[r][j]);
                    lyr::unpack8(pd, qk_partner_words(dw8[r][j], L.src));
                    lyr::unpack8(py, qk_partner_words(ry8[r][j], L.src));
                    float dy[8], pdot, pg;
                    if (from_out) {  // y becomes xn
                        qk_out_grad8<true>(dy, pdot, d, pd, y, py, c, sn, g[k], ginv[k], L.v, L.half, rd);
                        pg = __fmul_rn(pdot, ginv[k]);
                    } else {
                        qk_rope_grad8<true>(dy, pdot, pg, d, pd, y, py, c, sn, g[k], L.v, L.half, rd);
                    }
                    const float m = __fdiv_rn(qk_seg_sum(pdot, L.seg, L.hv), (float)hd);
                    if (n < N && k * L.rpw + L.seg < NH) {
                        float o[8];
                        lyr::unpack8(o, ra8[r][j]);  // zeros unless ACC
                        qk_norm_grad8(o, rs[r][j], dy, y, m);
                        lyr::store8(dinp + (size_t)n * L.C + (k * 32 + L.lane) * 8, o);
                        gacc[k] += pg;
                    }
                }
            }
        }
    }
    if (partial) qk3_gain_partials<K>(partial, gacc, L, NH);  // uniform over the grid
}

// The token-row backward, second form (the default: qk3_bwd_form): form 1's dinp and gain
// partials (qk_backward_v3_kernel above) bit for bit, in 57% of its instructions and with the
// next loads always in flight. Why form 1 is slow at q's shape (K = 2 from fp32, 8 heads of 64;
// the grid: one wave of 6 blocks, 24 warps an SM): it issues 439 instructions per warp and vector
// of 8 values a lane (ncu, H200), and a warp has one vector's loads in flight (52 bytes a lane:
// KS = 1), issued after the math of the vector before and waited for before its own, so the SMs
// neither keep enough bytes in flight nor have issue slots to spare (ncu at its locked clocks:
// DRAM 48% of peak, 69% of the schedulers' cycles issuing). Per vector (SASS): the head sum's shuffles in a loop over the runtime
// hv, each with its own lane arithmetic (~60); __fdiv_rn by hd (~10, and a slow-path branch);
// n % T (an integer division) and the table row for each vector, not each row; the fp32 dout
// packed through __nv_bfloat162 (2 PRMTs a word); and from out, qk_out_grad8's choice of the
// rotation's part per value, which the compiler did not hoist: a branch per value, the warp
// running all three parts of it since its lanes hold all three (~20 a value). This form:
// - takes a warp's units (row, vector) in form 1's order and issues each unit's loads before the
//   math of the unit before it (two register buffers): the next unit's bytes are in flight
//   through every unit's math. (Through shared memory by cp.async, 2 or 3 units ahead, it was
//   slower from fp32, 155 against 112 us: a lane's 16-byte halves at a 32-byte stride double
//   the L2 requests; level from bf16.)
// - from out, rotates without branches. In a pair of dims (i, i + rd/2) with values (x1, x2),
//   both parts of RoPE^T are fma(x1, C, x2 * D): qk_rotT_lo is fma(x1, cos, -(x2 sin)) =
//   fma(x1, cos, x2 (-sin)) (negating a product before or after its rounding gives the same
//   bits), qk_rotT_hi is fma(x1, sin, x2 cos). So every lane takes x1 from the pair's lower lane
//   and x2 from its upper lane (two shuffles of bf16 words) and runs the same two instructions
//   per value with its own C and D; a lane past rd reads its own value for x1, +0 for x2, and
//   has C = 1, D = -0: fma(x, 1, +0 * -0) = x + -0, which is x for every x (+-0 and inf
//   included), as form 1's pass-through.
// - sums a head's lanes by shuffles at immediate lanes of the segment (HV: hv at compile time,
//   the same adds in the same order), takes the mean by a multiply with 1/hd (qk3_inv_hd: the
//   same bits), follows the position n % T from row to row, loads a row's table entries once for
//   its K vectors, in the lanes that rotate only, and packs and unpacks bf16 words directly.
// At q's shape: 249 instructions per warp and vector (the loop's SASS: 484 a row of 2 vectors),
// DRAM 75% of peak; dev_layers' bench (H200): 141 -> 112 us from the accumulator, 119 -> 95 us
// from bf16. The gain sums: each lane adds the same terms in the same order (one sum per vector,
// rows in the grid's order), and the launcher gives both forms the same grid.

// 1 / hd, for the head's mean m = sum / hd. hd = 8 hv with hv | 32 (qk_v3_fits) is a power of two
// 2^e (e <= 8), so 2^-e is exactly a float and sum * 2^-e = sum / 2^e as real numbers;
// __fmul_rn and __fdiv_rn both return that real number rounded to nearest even (IEEE-754 with
// denormals: nothing here builds with -ftz), hence the same float for every finite sum, results
// among the denormals included; +-0 and +-inf give +-0 and +-inf with either, a NaN a NaN (m only
// meets FFMAs, whose NaNs are canonical). __frcp_rn of a power of two is exact.
__device__ __forceinline__ float qk3_inv_hd(int hd) {
    float r = __frcp_rn((float)hd);
#ifdef BREAK_QK3_FAST  // a deliberately wrong variant (dev/broken_variants.sh): 1/hd one ulp too large
    r = __uint_as_float(__float_as_uint(r) + 1u);
#endif
    return r;
}
// The sum of x over the HV lanes of the caller's segment, added in lane order: qk_seg_sum's bits,
// its lanes as immediates (shuffles within segments of width HV).
template <int HV>
__device__ __forceinline__ float qk3_seg_sum(float x) {
    float t = 0.f;
#pragma unroll
    for (int u = 0; u < HV; u++) t = __fadd_rn(t, __shfl_sync(0xffffffffu, x, u, HV));
    return t;
}
// One unit's loads (a lane's vector of one row): dout, saved, rstd, dinp when accumulating (a
// unit past N or past the heads: zeros)
template <bool ACC, typename DT>
struct Qk3Unit {
    Qk3Dout<DT> d;
    uint4 y, a;
    float r;
    __device__ __forceinline__ void load(const DT *dout, const bf16 *saved, const float *rstd, const bf16 *dinp, size_t at,
                                         size_t hr, bool ok) {
        d.load(dout + at, ok);
        y = ok ? qk_load_stream(saved + at) : make_uint4(0, 0, 0, 0);
        r = ok ? rstd[hr] : 0.f;
        a = ACC && ok ? qk_load_stream(dinp + at) : make_uint4(0, 0, 0, 0);
    }
};
__device__ __forceinline__ uint4 qk3_and(uint4 w, unsigned m) { return make_uint4(w.x & m, w.y & m, w.z & m, w.w & m); }

// FROM_OUT: saved is the forward's out (else xn); HV: hv, or 0 (any hv, read from hd).
template <int K, bool ACC, typename DT, bool FROM_OUT, int HV>
__global__ void __launch_bounds__(QK3_WARPS * 32, qk3_bwd_blocks(K, ACC)) qk_backward_v3f_kernel(
    bf16 *dinp, float *partial, const DT *dout, float dout_scale, const bf16 *__restrict__ saved,
    const float *__restrict__ rstd, const float *__restrict__ cos_t, const float *__restrict__ sin_t,
    const float *__restrict__ gain, int N, int NH, int T, int hd, int rd) {
    constexpr int R = qk3_rows<K>(), U = R * K;  // units a warp takes per step: R rows of K vectors
    static_assert(U % 2 == 0, "the two load buffers alternate within a step");
    const Qk3Lane L(NH, hd, rd);
    const float inv_hd = qk3_inv_hd(hd);
    // The lane's part of the rotation (dims below rd/2, up to rd, past rd) and, from out, the
    // pair's lower and upper lanes (x1 and x2; a lane past rd: itself, its x2 masked to +0)
    const bool lo = L.v * 8 < L.half, rot = L.v * 8 < rd;
    const int asrc = lo || !rot ? L.lane : L.src, bsrc = lo ? L.src : L.lane;
    const unsigned bmask = rot ? 0xffffffffu : 0u, dneg = lo ? 0x80000000u : 0u;
    const int j0 = lo ? L.v * 8 : L.v * 8 - L.half;  // the lane's first table entry (rot)
    const float *ctab = lo ? cos_t : sin_t, *dtab = lo ? sin_t : cos_t;
    float g[K], ginv[K], gacc[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int h = k * L.rpw + L.seg;
        g[k] = gain && h < NH ? lyr::rnd(gain[h]) : 1.f;
        ginv[k] = qk_gain_inv(g[k]);
        gacc[k] = 0.f;
    }
    // the row's table entries: from out C and D (a lane past rd keeps 1 and -0), else cos and sin
    float c[8], sn[8];
#pragma unroll
    for (int j = 0; j < 8; j++) c[j] = 1.f, sn[j] = -0.f;
    const int stride = gridDim.x * QK3_WARPS * R;  // rows a step of the grid takes
    auto unit_load = [&](Qk3Unit<ACC, DT> &b, int n, int k) {
        const int h = k * L.rpw + L.seg;
        b.load(dout, saved, rstd, dinp, (size_t)n * L.C + (k * 32 + L.lane) * 8, (size_t)n * NH + h, n < N && h < NH);
    };
    Qk3Unit<ACC, DT> buf[2];
    int base = blockIdx.x * QK3_WARPS * R;
    int t0 = (base + L.w * R) % T;  // the position of the warp's first row in the step
    const int tstep = stride % T;
    unit_load(buf[0], base + L.w * R, 0);
    for (; base < N; base += stride) {  // uniform over the block
        const int n0 = base + L.w * R;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int r = u / K, k = u % K, n = n0 + r, h = k * L.rpw + L.seg;
            if (u + 1 < U) unit_load(buf[(u + 1) & 1], n0 + (u + 1) / K, (u + 1) % K);
            else unit_load(buf[0], n0 + stride, 0);  // the next step's first unit (past N: none)
            if (k == 0) {  // the row's table entries
                const int t = t0 + r < T ? t0 + r : t0 + r - T;
                if (FROM_OUT) {
                    if (rot) {
                        const float *cp = ctab + (size_t)t * L.half + j0, *dp = dtab + (size_t)t * L.half + j0;
                        const float4 c0 = *reinterpret_cast<const float4 *>(cp), c1 = *reinterpret_cast<const float4 *>(cp + 4);
                        const float4 d0 = *reinterpret_cast<const float4 *>(dp), d1 = *reinterpret_cast<const float4 *>(dp + 4);
                        const float cc[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
                        const float dd[8] = {d0.x, d0.y, d0.z, d0.w, d1.x, d1.y, d1.z, d1.w};
#pragma unroll
                        for (int j = 0; j < 8; j++) c[j] = cc[j], sn[j] = __uint_as_float(__float_as_uint(dd[j]) ^ dneg);
                    }
                } else {
                    qk_coef_fast(c, sn, cos_t + (size_t)t * L.half, sin_t + (size_t)t * L.half, L.v, L.half);
                }
            }
            const Qk3Unit<ACC, DT> &b = buf[u & 1];
            const uint4 dw = b.d.words2(dout_scale);
            float d[8], y[8], dy[8], pdot, pg;
            qk3_unpack8(d, dw);
            qk3_unpack8(y, b.y);
            if constexpr (FROM_OUT) {  // y becomes xn
                float d1[8], d2[8], y1[8], y2[8];
                qk3_unpack8(d1, qk_partner_words(dw, asrc));
                qk3_unpack8(d2, qk_partner_words(qk3_and(dw, bmask), bsrc));
                qk3_unpack8(y1, qk_partner_words(b.y, asrc));
                qk3_unpack8(y2, qk_partner_words(qk3_and(b.y, bmask), bsrc));
                pdot = 0.f;
#pragma unroll
                for (int j = 0; j < 8; j++) {  // qk_out_grad8's operations
                    const float t = __fmaf_rn(d1[j], c[j], __fmul_rn(d2[j], sn[j]));
                    const float x = __fmaf_rn(y1[j], c[j], __fmul_rn(y2[j], sn[j]));
                    dy[j] = __fmul_rn(g[k], t);
                    pdot = __fmaf_rn(d[j], y[j], pdot);
                    y[j] = __fmul_rn(x, ginv[k]);
                }
                pg = __fmul_rn(pdot, ginv[k]);
            } else {
                float pd[8], py[8];
                qk3_unpack8(pd, qk_partner_words(dw, L.src));
                qk3_unpack8(py, qk_partner_words(b.y, L.src));
                qk_rope_grad8<true>(dy, pdot, pg, d, pd, y, py, c, sn, g[k], L.v, L.half, rd);
            }
            const float m = __fmul_rn(HV ? qk3_seg_sum<HV ? HV : 1>(pdot) : qk_seg_sum(pdot, L.seg, L.hv), inv_hd);
            if (n < N && h < NH) {
                float o[8];
                qk3_unpack8(o, b.a);  // zeros unless ACC
                qk_norm_grad8(o, b.r, dy, y, m);
                lyr::store8(dinp + (size_t)n * L.C + (k * 32 + L.lane) * 8, o);
                gacc[k] += pg;
            }
        }
        t0 = t0 + tstep < T ? t0 + tstep : t0 + tstep - T;
    }
    if (partial) qk3_gain_partials<K>(partial, gacc, L, NH);  // uniform over the grid
}

// cos_t, sin_t (T, rd/2) fp32 on the device: computed on the host by rope_tables_cpu (the
// reference's fp32 arithmetic, NTK-scaled base for T > 1024) and copied; synchronous, once per T.
inline void rope_tables(float *cos_t, float *sin_t, int T, int rd, double base) {
    layers_require(T >= 1 && rd >= 2 && rd % 2 == 0, "rope_tables", "needs T >= 1 and an even rd >= 2");
    const size_t n = (size_t)T * (rd / 2);
    std::vector<float> c(n), s(n);
#ifdef BREAK_NTK_ROPE  // a deliberately wrong variant (dev/broken_variants.sh): the GPU tables keep the
    // plain base past 1024 (the base is pre-divided by the NTK factor rope_tables_cpu applies)
    if (T > ROPE_REF_LEN) base /= std::pow((double)T / ROPE_REF_LEN, (double)rd / (double)(rd - 2));
#endif
    rope_tables_cpu(c.data(), s.data(), T, rd, base);
    cudaCheck(cudaMemcpy(cos_t, c.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(sin_t, s.data(), n * sizeof(float), cudaMemcpyHostToDevice));
}

inline void qk_check_shape(int B, int T, int NH, int hd, int rd, const char *who) {
    layers_require(B >= 0 && T >= 1 && NH >= 1, who, "needs B >= 0, T >= 1, NH >= 1");
    if (hd <= 0 || hd % 8 != 0 || hd / 8 > 32)
        fatal_config("layers.cuh: %s: head_dim=%d must be a positive multiple of 8, at most 256 (a head-row in one warp)", who,
                     hd);
    if (rd < 0 || rd % 2 != 0 || rd > hd)
        fatal_config("layers.cuh: %s: rope dims=%d must be even and in [0, head_dim=%d]", who, rd, hd);
}
// head-rows a warp takes at a time, and the forward's grid (QK_STEPS warp-steps per warp)
inline int qk_rows_per_warp(int hd) { return 32 / (hd / 8); }
inline long qk_forward_grid(long HR, int hd) { return ceil_div(HR, (long)QK_WARPS * QK_STEPS * qk_rows_per_warp(hd)); }
// The fast path (RoPE partners by shuffles, table rows by 16-byte loads) needs rd % 16 == 0 (each
// lane's 8 dims in one half of the rotation) and 16-byte aligned tables; any other even rd takes
// the shared-memory path.
inline bool qk_fast_path(int rd, const float *cos_t, const float *sin_t) {
    return rd % 16 == 0 && ((uintptr_t)cos_t & 15) == 0 && ((uintptr_t)sin_t & 15) == 0;
}
// B * T * NH head-rows; the kernels index them in 32 bits (the grid-stride loop may step up to a
// grid past HR), so at most 2^30 (2^36 values: far beyond any activation this code allocates)
inline long qk_head_rows(int B, int T, int NH, const char *who) {
    const long HR = (long)B * T * NH;
    layers_require(HR <= (1L << 30), who, "at most 2^30 head-rows (B * T * heads; the kernels index them in 32 bits)");
    return HR;
}

// Which q/k kernels the launchers run: 3, the token-row kernels where qk_v3_fits (other shapes
// take the head-row kernels), or 2, the head-row kernels always. Developer knob: QK_KERNEL=2|3 in
// the environment, read once; a launcher's `version` argument (dev/layers.cu's same-call
// benchmark) overrides both. Both give the same bits (dgain aside: its sums run in another order).
constexpr int QK_KERNEL_DEFAULT = 3;
inline int qk_kernel_version() {
    static const int v = 2 + env_choice("QK_KERNEL", {"2", "3"}, QK_KERNEL_DEFAULT - 2);
    return v;
}
// 8-value vectors per lane and token row of the token-row kernels, and whether they take a shape
inline int qk3_vectors(int NH, int hd) { return ceil_div((long)NH * (hd / 8), 32); }
inline bool qk_v3_fits(int NH, int hd, int rd, const float *cos_t, const float *sin_t) {
    return qk_fast_path(rd, cos_t, sin_t) && 32 % (hd / 8) == 0 && qk3_vectors(NH, hd) <= QK3_MAX_K;
}
inline bool qk_use_v3(int version, int NH, int hd, int rd, const float *cos_t, const float *sin_t) {
    if (version == 0) version = qk_kernel_version();
    return version == 3 && qk_v3_fits(NH, hd, rd, cos_t, sin_t);
}
// Which form of the token-row backward runs: 2, qk_backward_v3f_kernel (the default), or 1,
// qk_backward_v3_kernel (the first, kept for an A/B on the GPU). Developer knob: QK3_BWD=1|2 in
// the environment, read once; the backward launchers' `form` argument (dev/layers.cu) overrides
// it. Both give the same bits, dinp and dgain.
constexpr int QK3_BWD_DEFAULT = 2;
inline int qk3_bwd_form() {
    static const int f = 1 + env_choice("QK3_BWD", {"1", "2"}, QK3_BWD_DEFAULT - 1);
    return f;
}
// f(std::integral_constant<int, K>) with the kernels' K for `vectors` (3 runs as 4, lanes idle)
template <typename F>
inline void qk3_with_k(int vectors, F f) {
    if (vectors == 1) f(std::integral_constant<int, 1>());
    else if (vectors == 2) f(std::integral_constant<int, 2>());
    else f(std::integral_constant<int, 4>());
}
static_assert(QK3_MAX_K == 4, "qk3_with_k instantiates K = 1, 2, 4");
// The forward kernels of the two launchers below (normalize: qk_norm_rope_gain_forward, else the
// recompute qk_rope_gain_forward), the token-row ones where they fit; the launchers check the shape.
inline void qk_forward_launch(bf16 *out, bf16 *xn, float *rstd, const bf16 *inp, const float *cos_t, const float *sin_t,
                              const float *gain, int B, int T, int NH, int hd, int rd, bool normalize, int version,
                              cudaStream_t stream) {
    const long HR = (long)B * T * NH;
    if (qk_use_v3(version, NH, hd, rd, cos_t, sin_t)) {
        const int N = B * T;
        qk3_with_k(qk3_vectors(NH, hd), [&](auto kc) {
            constexpr int K = decltype(kc)::value;
            auto kernel = normalize ? qk_forward_v3_kernel<K, true> : qk_forward_v3_kernel<K, false>;
            kernel<<<ceil_div(N, (long)QK3_WARPS * qk3_rows<K>()), QK3_WARPS * 32, 0, stream>>>(out, xn, rstd, inp, cos_t, sin_t,
                                                                                              gain, N, NH, T, hd, rd);
        });
    } else {
        auto kernel = qk_fast_path(rd, cos_t, sin_t) ? qk_norm_rope_gain_forward_kernel<true> : qk_norm_rope_gain_forward_kernel<false>;
        kernel<<<qk_forward_grid(HR, hd), QK_WARPS * 32, 0, stream>>>(out, xn, rstd, inp, cos_t, sin_t, gain, NH, T, hd, rd,
                                                                      (int)HR, normalize);
    }
    cudaCheckLaunch();
}

// out, xn (B, T, NH, hd) bf16, rstd (B, T, NH) fp32: per-head rmsnorm (xn), partial RoPE on the
// first rd dims, times gain[h] (gain null: 1, for k). xn and rstd may be null (no backward).
// cos_t/sin_t from rope_tables(T, rd). out may be inp. version: 0 (qk_kernel_version()), 2 or 3.
inline void qk_norm_rope_gain_forward(bf16 *out, bf16 *xn, float *rstd, const bf16 *inp, const float *cos_t,
                                      const float *sin_t, const float *gain, int B, int T, int NH, int hd, int rd,
                                      cudaStream_t stream, int version = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "qk_norm_rope_gain_forward";
    qk_check_shape(B, T, NH, hd, rd, who);
    layers_check_aligned(out, who, "out");
    if (xn) layers_check_aligned(xn, who, "xn");
    layers_check_aligned(inp, who, "inp");
    if (qk_head_rows(B, T, NH, who) > 0)
        qk_forward_launch(out, xn, rstd, inp, cos_t, sin_t, gain, B, T, NH, hd, rd, true, version, stream);
}
// out (B, T, NH, hd) = gain * RoPE(xn): the forward's out again from its xn (bf16), bit for bit
// (the forward rotates the stored xn). CPU twin: qk_rope_gain_forward_cpu. The model no longer
// calls it: it keeps q and k (attention's inputs) and the q/k backward recomputes xn from them
// (qk_norm_rope_gain_backward with out). dev_layers still checks it against the forward.
inline void qk_rope_gain_forward(bf16 *out, const bf16 *xn, const float *cos_t, const float *sin_t, const float *gain,
                                 int B, int T, int NH, int hd, int rd, cudaStream_t stream, int version = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "qk_rope_gain_forward";
    qk_check_shape(B, T, NH, hd, rd, who);
    layers_check_aligned(out, who, "out");
    layers_check_aligned(xn, who, "xn");
    if (qk_head_rows(B, T, NH, who) > 0)
        qk_forward_launch(out, nullptr, nullptr, xn, cos_t, sin_t, gain, B, T, NH, hd, rd, false, version, stream);
}
// The token-row backward (qk_backward_v3_kernel) with dout of type DT (bf16, or float: attention's
// dQ accumulator, rounded as bf16(dout * dout_scale)); returns its number of blocks (the gain
// partials'). One full wave of the bf16 kernel (fewer blocks for small problems) for both types:
// the grid decides which rows each lane adds to its gain sum and in what order, so the same grid
// keeps dgain bit for bit the same from fp32 as from bf16.
// form: 0 (qk3_bwd_form()), 1 (qk_backward_v3_kernel) or 2 (qk_backward_v3f_kernel); both forms
// run on form 1's grid.
template <typename DT>
inline int qk_backward_v3_launch(bf16 *dinp, float *partial, const DT *dout, float dout_scale, const bf16 *saved,
                                 bool from_out, const float *rstd, const float *cos_t, const float *sin_t, const float *gain, int N, int T,
                                 int NH, int hd, int rd, bool accumulate, DeviceScratch scratch, const char *who,
                                 cudaStream_t stream, int form = 0) {
    if (form == 0) form = qk3_bwd_form();
    int nb = 0;
    qk3_with_k(qk3_vectors(NH, hd), [&](auto kc) {
        constexpr int K = decltype(kc)::value;
        auto wave_kernel = accumulate ? qk_backward_v3_kernel<K, true> : qk_backward_v3_kernel<K, false>;
        nb = std::max(1, std::min(ceil_div(N, (long)QK3_WARPS * qk3_rows<K>()),
                                  full_wave_blocks((const void *)wave_kernel, QK3_WARPS * 32)));
        if (partial) layers_check_scratch(scratch, (size_t)nb * NH * sizeof(float), who);
        if (form == 1) {
            auto kernel = accumulate ? qk_backward_v3_kernel<K, true, DT> : qk_backward_v3_kernel<K, false, DT>;
            kernel<<<nb, QK3_WARPS * 32, 0, stream>>>(dinp, partial, dout, dout_scale, saved, from_out, rstd, cos_t, sin_t,
                                                      gain, N, NH, T, hd, rd);
        } else {
            auto pick = [&](auto acc) {
                constexpr bool A = decltype(acc)::value;
                if (hd == 64) return from_out ? qk_backward_v3f_kernel<K, A, DT, true, 8> : qk_backward_v3f_kernel<K, A, DT, false, 8>;
                return from_out ? qk_backward_v3f_kernel<K, A, DT, true, 0> : qk_backward_v3f_kernel<K, A, DT, false, 0>;
            };
            auto kernel = accumulate ? pick(std::true_type()) : pick(std::false_type());
            kernel<<<nb, QK3_WARPS * 32, 0, stream>>>(dinp, partial, dout, dout_scale, saved, rstd, cos_t, sin_t, gain, N, NH,
                                                      T, hd, rd);
        }
    });
    return nb;
}

// What the q/k backward reads of the forward, besides rstd: exactly one of xn (the normalized
// input, as qk_norm_rope_gain_forward stores it) and out (its output gain * RoPE(xn), which the
// model keeps anyway as attention's input, so it stores no xn: xn = RoPE^T(out) / gain is
// recomputed in registers, qk_out_grad8). From out, the gain gradient of a head whose gain is
// exactly 0 reads 0 (out is 0 there); the input gradient is exact either way.
inline const bf16 *qk_saved(const bf16 *xn, const bf16 *out, const char *who) {
    layers_require((xn != nullptr) != (out != nullptr), who, "takes exactly one of xn and out");
    return xn ? xn : out;
}

// dinp (+)= the gradient through gain, RoPE and the per-head rmsnorm, from the forward's rstd and
// its xn or its out (qk_saved); dgain (NH) += the gain gradient (both null for k). dinp may be dout.
// version: as the forward's; form: the token-row backward's (qk_backward_v3_launch).
inline void qk_norm_rope_gain_backward(bf16 *dinp, float *dgain, const bf16 *dout, const bf16 *xn, const bf16 *out,
                                       const float *rstd, const float *cos_t, const float *sin_t, const float *gain, int B,
                                       int T, int NH, int hd, int rd, bool accumulate, DeviceScratch scratch,
                                       cudaStream_t stream, int version = 0, int form = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "qk_norm_rope_gain_backward";
    qk_check_shape(B, T, NH, hd, rd, who);
    const bf16 *saved = qk_saved(xn, out, who);
    layers_require(!dgain || gain, who, "dgain needs gain");
    layers_require(!dgain || NH <= QK_WARPS * 32, who, "at most 256 heads with a gain gradient");
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout, who, "dout");
    layers_check_aligned(saved, who, xn ? "xn" : "out");
    const long HR = qk_head_rows(B, T, NH, who);
    if (HR == 0) return;
    int nb;
    float *partial = dgain ? (float *)scratch.ptr : nullptr;
    if (qk_use_v3(version, NH, hd, rd, cos_t, sin_t)) {
        nb = qk_backward_v3_launch(dinp, partial, dout, 1.f, saved, out != nullptr, rstd, cos_t, sin_t, gain, B * T, T, NH,
                                   hd, rd, accumulate, scratch, who, stream, form);
    } else {
        // one full wave (fewer blocks for small problems), rounded up so that the grid's stride,
        // nb * QK_WARPS * QK_STEPS * rpw head-rows, is a multiple of NH (see the kernel)
        const bool fast = qk_fast_path(rd, cos_t, sin_t);
        auto kernel = out ? (fast ? qk_norm_rope_gain_backward_kernel<true, true> : qk_norm_rope_gain_backward_kernel<false, true>)
                          : (fast ? qk_norm_rope_gain_backward_kernel<true, false> : qk_norm_rope_gain_backward_kernel<false, false>);
        const int wave = full_wave_blocks((const void *)kernel, QK_WARPS * 32);
        const int rows = QK_WARPS * QK_STEPS * qk_rows_per_warp(hd), q = NH / std::gcd(NH, rows);
        nb = (int)std::max(1L, std::min(qk_forward_grid(HR, hd), (long)wave));
        nb = ceil_div(nb, q) * q;
        if (dgain) layers_check_scratch(scratch, (size_t)nb * NH * sizeof(float), who);
        kernel<<<nb, QK_WARPS * 32, 0, stream>>>(dinp, partial, dout, saved, rstd, cos_t, sin_t, gain, NH, T, hd, rd, (int)HR,
                                                 accumulate);
    }
    cudaCheckLaunch();
    if (dgain) channel_partials_finalize(dgain, partial, nb, NH, nullptr, stream);
}

// Whether qk_norm_rope_gain_backward_from_acc takes a shape: where the token-row kernels run
// (qk_use_v3: they fit, and the QK_KERNEL knob or version does not ask for the head-row ones,
// which have no fp32 path). Elsewhere the caller lets attention_backward write a bf16 dq and
// runs qk_norm_rope_gain_backward on it (the same bits).
inline bool qk_backward_from_acc_fits(int NH, int hd, int rd, const float *cos_t, const float *sin_t, int version = 0) {
    return qk_use_v3(version, NH, hd, rd, cos_t, sin_t);
}
// qk_norm_rope_gain_backward with dout = bf16(dout_acc * dout_scale): dout_acc (B, T, NH, hd)
// fp32, attention's dQ accumulator (attention_backward with dq = nullptr, then
// attention_backward_dq_acc / attention_backward_dq_acc_scale). Bit for bit what attention's dq
// pass followed by qk_norm_rope_gain_backward gives (dinp and dgain; Qk3Dout), without that pass
// and its bf16 dq: per value 4 bytes read instead of 4 read + 2 written + 2 read. Only where
// qk_backward_from_acc_fits (else exit 2). xn, out, version, form: as qk_norm_rope_gain_backward
// (qk_saved); dinp may not be the one given.
inline void qk_norm_rope_gain_backward_from_acc(bf16 *dinp, float *dgain, const float *dout_acc, float dout_scale,
                                                const bf16 *xn, const bf16 *out, const float *rstd, const float *cos_t,
                                                const float *sin_t, const float *gain, int B, int T, int NH, int hd, int rd,
                                                bool accumulate, DeviceScratch scratch, cudaStream_t stream, int version = 0,
                                                int form = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    const char *who = "qk_norm_rope_gain_backward_from_acc";
    qk_check_shape(B, T, NH, hd, rd, who);
    const bf16 *saved = qk_saved(xn, out, who);
    layers_require(qk_backward_from_acc_fits(NH, hd, rd, cos_t, sin_t, version), who,
                   "needs a shape the token-row kernels take (qk_backward_from_acc_fits)");
    layers_require(!dgain || gain, who, "dgain needs gain");
    layers_require((const void *)dinp != (const void *)saved, who, xn ? "dinp may not be xn" : "dinp may not be out");
    layers_check_aligned(dinp, who, "dinp");
    layers_check_aligned(dout_acc, who, "dout_acc");
    layers_check_aligned(saved, who, xn ? "xn" : "out");
    if (qk_head_rows(B, T, NH, who) == 0) return;
    float *partial = dgain ? (float *)scratch.ptr : nullptr;
    const int nb = qk_backward_v3_launch(dinp, partial, dout_acc, dout_scale, saved, out != nullptr, rstd, cos_t, sin_t, gain,
                                         B * T, T, NH, hd, rd, accumulate, scratch, who, stream, form);
    cudaCheckLaunch();
    if (dgain) channel_partials_finalize(dgain, partial, nb, NH, nullptr, stream);
}

// ----------------------------------------------------------------------------
// the weights the kernels read: the bf16 copy of the fp32 master weights, and under late QAT the
// linear weights fake-quantized to int6 per row. CPU twin: fake_quant_cpu and model_refresh_qat
// (model_cpu.h). The GPU model owns the copy and refreshes it when its weights or its QAT mode
// change (model_gpu_refresh_weights); these are the pieces.

constexpr int FQ_WARPS = 8;  // fake_quant: one warp per row, this many rows per block

// VEC: p 16-byte and out 8-byte aligned
template <bool VEC>
__global__ void to_bf16_kernel(bf16 *__restrict__ out, const float *__restrict__ p, size_t n) {
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t start = 0;
    if (VEC) {
        const size_t n4 = n / 4;
        for (size_t i = tid; i < n4; i += stride) {
            const float4 q = reinterpret_cast<const float4 *>(p)[i];
            __nv_bfloat162 lo = __floats2bfloat162_rn(q.x, q.y), hi = __floats2bfloat162_rn(q.z, q.w);
            reinterpret_cast<__nv_bfloat162 *>(out)[2 * i] = lo;
            reinterpret_cast<__nv_bfloat162 *>(out)[2 * i + 1] = hi;
        }
        start = n4 * 4;
    }
    for (size_t i = start + tid; i < n; i += stride) out[i] = __float2bfloat16(p[i]);
}

// A matrix inside a flat buffer: `rows` x `cols` row-major at element `offset`.
struct LinearRef {
    size_t offset;
    int rows, cols;
};

// Per-row int6 fake quantization, exactly fake_quant_cpu's fp32 arithmetic:
//   s = max(rowmax|w| / 31, 1/31); q = clamp(round_half_even(w / s), -32, 31); w_q = q * s
// (IEEE division and product spelled out with __fdiv_rn/__fmul_rn so no compiler flag changes
// them). out (bf16) gets the reference's straight-through value evaluated in bf16; out_f32 (may
// be null) gets w_q. One warp per row; grid (row blocks, matrices).
__global__ void fake_quant_kernel(bf16 *out, float *out_f32, const float *__restrict__ w, const LinearRef *mats) {
    const LinearRef mr = mats[blockIdx.y];
    const int lane = threadIdx.x & 31, row = blockIdx.x * FQ_WARPS + (threadIdx.x >> 5);
    if (row >= mr.rows) return;  // whole warps leave together: the shuffles below stay full-warp
    const size_t base = mr.offset + (size_t)row * mr.cols;
    const float *x = w + base;
    float mx = 0.f;
    for (int j = lane; j < mr.cols; j += 32) mx = fmaxf(mx, fabsf(x[j]));
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float s = fmaxf(__fdiv_rn(mx, 31.f), (float)(1.0 / 31.0));
    for (int j = lane; j < mr.cols; j += 32) {
        const float q = fminf(fmaxf(rintf(__fdiv_rn(x[j], s)), -32.f), 31.f);  // rintf: half to even
        const float wq = __fmul_rn(q, s);
        if (out_f32) out_f32[base + j] = wq;
        // the reference's w + (w_q - w).detach() on bf16 tensors: each op rounds to bf16
        const float wb = bf16_round(x[j]);
        out[base + j] = __float2bfloat16(wb + bf16_round(bf16_round(wq) - wb));
    }
}

// out = bf16(params), n elements (round to nearest even)
inline void params_to_bf16(bf16 *out, const float *params, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    const int grid = grid_blocks(n / 4 + 1, ELEM_THREADS * 2);
    if (aligned16(params) && ((uintptr_t)out & 7) == 0) to_bf16_kernel<true><<<grid, ELEM_THREADS, 0, stream>>>(out, params, n);
    else to_bf16_kernel<false><<<grid, ELEM_THREADS, 0, stream>>>(out, params, n);
    cudaCheckLaunch();
}

// Fake-quantize the n_mats matrices of the device table d_mats: w (fp32) -> out (bf16, same
// offsets) and, when out_f32 is not null, the fp32 values w_q. max_rows: the most rows of any.
inline void fake_quant(bf16 *out, float *out_f32, const float *w, const LinearRef *d_mats, int n_mats, int max_rows,
                       cudaStream_t stream) {
    if (n_mats <= 0) return;
    if (n_mats > 65535 || max_rows <= 0) fatal("fake_quant: bad table (%d matrices, max rows %d)", n_mats, max_rows);
    dim3 grid(ceil_div(max_rows, FQ_WARPS), n_mats);
    fake_quant_kernel<<<grid, 32 * FQ_WARPS, 0, stream>>>(out, out_f32, w, d_mats);
    cudaCheckLaunch();
}

// The linear weights (model.h's visit_linear_weights) as a device table of LinearRefs into
// `params`, a flat buffer laid out like the tensor list (only its addresses are used).
struct LinearTable {
    LinearRef *d = nullptr;  // (n) on the device
    int n = 0, max_rows = 0;
};
inline LinearTable linear_table_create(const Config &c, float *params) {
    Params<float> p;
    params_bind(p, c, params);
    std::vector<LinearRef> refs;
    LinearTable t;
    visit_linear_weights(p, c, [&](float *w, int rows, int cols) {
        refs.push_back(LinearRef{(size_t)(w - params), rows, cols});
        t.max_rows = std::max(t.max_rows, rows);
    });
    t.n = (int)refs.size();
    if (t.n > 0) {
        cudaCheck(cudaMalloc(&t.d, refs.size() * sizeof(LinearRef)));
        cudaCheck(cudaMemcpy(t.d, refs.data(), refs.size() * sizeof(LinearRef), cudaMemcpyHostToDevice));
    }
    return t;
}
inline void linear_table_free(LinearTable &t) {
    cudaFreeCheck(t.d);
    t = LinearTable();
}

// out (flat, n) = the bf16 weights for a forward in mode `qat`: bf16(params), then under QAT_INT6
// the linear weights overwritten by their fake-quantized values.
inline void weights_to_bf16(bf16 *out, const float *params, size_t n, const LinearTable &linear, QatMode qat,
                            cudaStream_t stream) {
    ProfScope prof_(PROF_OPTIM, stream);
    params_to_bf16(out, params, n, stream);
    if (qat == QAT_INT6) fake_quant(out, nullptr, params, linear.d, linear.n, linear.max_rows, stream);
}

// ----------------------------------------------------------------------------
// scratch sizes of the whole header

// Enough scratch for every launcher of this header with at most N rows, rows of at most C
// channels (the model dim) and tables of at most `rows` rows (the largest of vocab and bigram
// buckets).
inline size_t layers_scratch_bytes(int N, int C, int rows) {
    return std::max(reduce_scratch_bytes(C), embedding_backward_scratch_bytes(N, C, rows));
}
