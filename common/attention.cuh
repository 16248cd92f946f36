// attention.cuh: causal flash attention (forward and backward) and XSA on the GPU.
// defines: attention_forward, attention_backward (+ attention_backward_scratch_floats, and
//          attention_backward_dq_acc / _scale for a caller that takes dQ in fp32, dq = nullptr),
//          xsa_forward, xsa_backward; the forward's two paths attention_forward_mma (any GPU)
//          and attention_forward_wgmma (sm_90a, Hopper; sm90_available() in cuda_utils.cuh says where they run);
//          the backward's two, attention_backward_mma and attention_backward_sm90 (+ _available)
//
// The GPU twins of attention_forward_cpu / attention_backward_cpu / xsa_forward_cpu /
// xsa_backward_cpu in model_cpu.h, with the same layouts:
//   q, out, dq (B, T, H, hd) bf16      k, v, dk, dv (B, T, KV, hd) bf16      lse (B, H, T) fp32
// Query head h reads KV head h / (H/KV) (GQA), the softmax scale is 1/sqrt(hd) = 1/8, and
// head_dim is fixed at 64 at compile time (the kernels' tiles are built around a 128-byte row).
//
// How it works (the FlashAttention-2 recipe):
// - Forward: one CTA owns 128 query rows of one (b, h); its 4 warps own 32 rows each. K and V
//   stream through shared memory in 64-row tiles with cp.async double buffering (the loads of
//   tile j+1 fly while tile j is being used). S = Q K^T and O += P V run on the tensor cores
//   (mma.sync m16n8k16, bf16 in, fp32 accumulate); the softmax is "online": each row keeps its
//   running max m and sum l, and O is rescaled when the max grows, so the T x T score matrix
//   never exists. The output is O / l and the row's log-sum-exp lse = m + log(l) is saved.
// - Backward: a preprocess pass computes D = rowsum(dO * O) (the softmax's Jacobian term),
//   converts lse to log2 units and zeroes an fp32 dQ accumulator (in training, every layer's
//   call but the first finds its accumulator zeroed by the previous call's kernel:
//   AttnBwdPrepared). The main kernel gives each CTA 128 keys of one (b, kv head); its 8 warps own 16 keys each (K and V stay in shared
//   memory, read as MMA operands), and loop over every query tile at or below the diagonal, for BOTH
//   query heads of the GQA group, so dK and dV sum in registers and are written once (no fp32
//   dK/dV buffers). Each step rebuilds P^T = exp(K Q^T * scale - lse) and dP^T = V dO^T,
//   forms dS^T = P^T (dP^T - D), adds dV += P^T dO and dK += dS^T Q from registers, and passes
//   dS through shared memory for dQ += dS K, which is added to the fp32 accumulator with
//   atomics. A last pass converts dQ to bf16. On an sm_90 GPU (GPU_ARCH=90a build)
//   attention_backward runs the Hopper version of the same kernel instead (wgmma, TMA,
//   mbarriers; section "Hopper backward (sm_90a)" below); elsewhere this mma.sync one.
//   NON-DETERMINISM: the dQ atomics add partial sums in whatever order the CTAs reach them,
//   so dq can differ in the last fp32 bits between runs (dk and dv are deterministic).
// - XSA (y -= (y . vn) vn, vn = v / max(|v|, 1e-12) of the same position and KV head) is one
//   small memory-bound pass each way, after the forward and before the backward; the training
//   loop keeps both y and the XSA output, as the CPU path does.
// - Causal masking is only applied on tiles that cross the diagonal (or the end of the
//   sequence); whole tiles above the diagonal are never visited, and warps whose rows lie
//   entirely above the diagonal skip their math. Rows past T are zero-filled on load and
//   never stored, so any T >= 1 works. A row with no visible key (impossible with causal
//   masking, guarded anyway) gets out = 0 and lse = -inf, and contributes nothing backward.
//
// Shared memory tiles are row-major with 128-byte rows (64 bf16) and an XOR swizzle: the
// 16-byte chunk c of row r is stored at chunk c ^ (r % 8). ldmatrix reads 8 rows of one chunk
// column at a time; without the swizzle those 8 rows hit the same banks (8-way conflict).
//
// Measured on one H200 at the seed shape (B=48, T=2048, H=8, KV=4; build/dev_attention):
// forward 0.80 ms = 259 TFLOP/s, backward 2.77 ms = 186 TFLOP/s (causal FLOPs, backward 2.5x),
// registers ~248 per thread in both main kernels, no spills (sm_80/86/89/90a). Tried and
// slower: forward tiles of 64 rows (4 CTAs/SM, 224 TFLOP/s) or 256 rows x 8 warps (243); the
// backward with 4 key warps per CTA (171); 16-byte dQ atomics (2.83 ms). Without its dQ step the
// backward would take 2.0 ms: the dQ products, their atomics and the second barrier are the
// next thing to win back.
//
// The Hopper path (section at the end: wgmma + TMA, stages S1 and S2 of the forward) reuses the
// masking, the online softmax and the fragment conversions below; attention_forward picks it
// on an sm_90 GPU in an sm_90a build.
#pragma once

#include <cuda.h>  // CUtensorMap (types only: the driver is reached through cudaGetDriverEntryPointByVersion)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled (the Hopper kernels' TMA)

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_utils.cuh"

namespace attn {
using namespace sm90;  // smem_u32, mbarriers, TMA, wgmma descriptors (cuda_utils.cuh)

// ----------------------------------------------------------------------------
// compile-time shapes

constexpr int HD = 64;                  // head_dim: every tile row is 64 bf16 = 128 bytes
constexpr int ROW_BYTES = HD * 2;       // bytes of one tile row in shared memory
constexpr int ROW_CHUNKS = ROW_BYTES / 16;  // 16-byte chunks per row (cp.async / ldmatrix unit)
constexpr int KCHUNKS = HD / 16;        // k-steps of 16 over head_dim for S = Q K^T
constexpr int DTILES = HD / 8;          // n-tiles of 8 over head_dim for O = P V
static_assert(ROW_CHUNKS == 8, "the XOR swizzle assumes 8 chunks per row (head_dim 64)");

// forward: a CTA owns FWD_BR query rows; K/V tiles have FWD_BC rows
constexpr int FWD_BR = 128;
constexpr int FWD_BC = 64;
constexpr int FWD_WARPS = 4;
constexpr int FWD_THREADS = FWD_WARPS * 32;
constexpr int FWD_WARP_ROWS = FWD_BR / FWD_WARPS;  // 32 query rows per warp
constexpr int FWD_MT = FWD_WARP_ROWS / 16;          // m16 tiles per warp
constexpr int FWD_NT = FWD_BC / 8;                  // n8 tiles of S per warp
constexpr int FWD_SMEM = (FWD_BR + 4 * FWD_BC) * ROW_BYTES;  // Q + 2 stages of K and V
static_assert(FWD_BR % (16 * FWD_WARPS) == 0, "each warp owns whole m16 tiles");
static_assert(FWD_BC % 16 == 0, "the P V step consumes keys 16 at a time");
static_assert((FWD_BR * ROW_CHUNKS) % FWD_THREADS == 0 && (FWD_BC * ROW_CHUNKS) % FWD_THREADS == 0,
              "tile loads split evenly over the threads");

// backward: a CTA owns BWD_BC keys (16 per warp); query tiles have BWD_BR rows
constexpr int BWD_BR = 64;
constexpr int BWD_KEY_WARPS = 8;
constexpr int BWD_BC = 16 * BWD_KEY_WARPS;  // 128 keys
constexpr int BWD_THREADS = 32 * BWD_KEY_WARPS;
constexpr int BWD_NT = BWD_BR / 8;        // n8 tiles of S^T per warp (over queries)
static_assert(BWD_KEY_WARPS % 4 == 0, "the dQ step splits the 64-row query tile into 4 row groups x (warps/4) column groups");
static_assert(BWD_BC % BWD_BR == 0, "a key block starts on a query-tile boundary");
constexpr int bwd_smem_bytes(int key_warps) {
    // K, V, dS^T tiles (BC rows each) + 2 stages of Q and dO (BR rows) + 2 stages of lse2 and D
    return 3 * (16 * key_warps) * ROW_BYTES + 4 * BWD_BR * ROW_BYTES + 4 * BWD_BR * (int)sizeof(float);
}

constexpr float SCALE = 0.125f;  // 1 / sqrt(64)
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
constexpr float NORM_EPS = 1e-12f;  // F.normalize's eps (XSA_NORM_EPS in model_cpu.h)

// ----------------------------------------------------------------------------
// small device helpers: shared-memory addresses, cp.async, ldmatrix, mma

// byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
    return (uint32_t)(row * ROW_BYTES + ((chunk ^ (row & 7)) << 4));
}

// 16-byte async copy global -> shared; when !valid nothing is read and the destination is zeroed
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
// 4-byte async copy (for the per-row fp32 statistics, which are not 16-byte aligned when T % 4 != 0)
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// four 8x8 bf16 matrices; lanes 8j..8j+7 give the row addresses of matrix j
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// the same, each matrix transposed (for operands stored k-major)
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// D (16x8 fp32) += A (16x16 bf16, row-major) * B (16x8 bf16, "col" = k-contiguous per column).
// Fragment layouts (lane = 4 * g + i):
//   A: a[0] = (row g, k 2i..2i+1), a[1] = (row g+8, same k), a[2] = (row g, k 8+2i..), a[3] = (row g+8, k 8+2i..)
//   B: b[0] = (k 2i..2i+1, col g), b[1] = (k 8+2i.., col g)
//   C: c[0..1] = (row g, cols 2i, 2i+1), c[2..3] = (row g+8, cols 2i, 2i+1)
__device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t x) {
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(x) : "memory");
}
__device__ __forceinline__ void st_shared_zero16(uint32_t addr) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ float fast_exp2(float x) {  // 2^x; -inf -> 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// 2^x for x <= 0 on the FMA and integer pipes instead of the MUFU (the exp2 unit, 16 per clock
// per SM, is as busy as the tensor cores in the softmax at d = 64; the Hopper forward's later
// stages compute a fraction of the exponentials here). x = j + f with j = round(x): adding
// 1.5 * 2^23 puts j in the low mantissa bits of t (and t - 1.5 * 2^23 = j), f = x - j in
// [-1/2, 1/2]; 2^f by a degree-3 minimax polynomial (relative error), 2^j by adding j to the
// exponent field ((bits of t) << 23 is j << 23 modulo 2^32). Max relative error 1.0e-4 (dev/
// attention.cu measures it), far below the 2^-9 of rounding P to bf16. x = -inf (anything
// <= -127) gives exactly 0: j = -127 and f = 0 make the bits of 1.0 minus 127 << 23.
// the bits of a float and back (memcpy: the one portable way, free in the generated code)
template <typename To, typename From>
__host__ __device__ __forceinline__ To bits_as(From x) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    To y;
    memcpy(&y, &x, sizeof y);
    return y;
}
__host__ __device__ __forceinline__ float exp2_poly(float x) {
    x = fmaxf(x, -127.f);
    const float t = x + 12582912.f;
    const float f = x - (t - 12582912.f);
    const float p = fmaf(fmaf(fmaf(0.0550087579f, f, 0.242211387f), f, 0.693283021f), f, 1.f);
    return bits_as<float>(bits_as<uint32_t>(p) + (bits_as<uint32_t>(t) << 23));
}
__device__ __forceinline__ float fast_log2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Copy rows [r0, r0 + ROWS) of a (len x 64) bf16 matrix whose rows are `stride` elements apart
// into a swizzled shared tile. Rows at or past `len` are zero-filled (their address is clamped
// to row 0 so no out-of-range pointer is ever formed).
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile_async(uint32_t tile, const __nv_bfloat16 *g, int r0, int len, size_t stride,
                                                int tid) {
#pragma unroll
    for (int i = tid; i < ROWS * ROW_CHUNKS; i += THREADS) {
        const int r = i / ROW_CHUNKS, c = i % ROW_CHUNKS;
        const bool ok = r0 + r < len;
        cp_async16(tile + swz(r, c), g + (size_t)(ok ? r0 + r : 0) * stride + c * 8, ok);
    }
}

// A operand fragments of a 16-row slice of a tile (rows row0..row0+15, all 64 columns):
// a[kk] covers columns 16kk..16kk+15 (Q in the forward).
__device__ __forceinline__ void load_a_frags(uint32_t a[KCHUNKS][4], uint32_t tile, int row0, int lane) {
    const int row = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < KCHUNKS; kk++) ldmatrix_x4(a[kk], tile + swz(row, 2 * kk + (lane >> 4)));
}

// B operand for X Y^T where Y is stored row-major [n][k] (K in the forward, Q and dO in the
// backward): rows n0..n0+15, columns 16kk..16kk+15 -> b[0..1] for n-tile n0/8, b[2..3] for the next.
__device__ __forceinline__ void load_b_nk(uint32_t b[4], uint32_t tile, int n0, int kk, int lane) {
    const int row = n0 + (lane & 7) + (lane >> 4) * 8;
    ldmatrix_x4(b, tile + swz(row, 2 * kk + ((lane >> 3) & 1)));
}
// B operand for X Y where Y is stored row-major [k][n] (V in the forward, dO, Q and K in the
// backward): rows (k) k0..k0+15, columns (n) 16np..16np+15 -> b[0..1] n-tile 2np, b[2..3] n-tile 2np+1.
__device__ __forceinline__ void load_b_kn(uint32_t b[4], uint32_t tile, int k0, int np, int lane) {
    const int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
    ldmatrix_x4_trans(b, tile + swz(row, 2 * np + (lane >> 4)));
}

// The C fragments of two adjacent n8 tiles (16 x 16 of a product) as one A fragment (16 x 16).
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// ----------------------------------------------------------------------------
// forward

// S (16*MT x 8*NT) = Q (regs) K^T (shared tile, rows n = keys)
template <int MT, int NT>
__device__ __forceinline__ void fwd_qk(float s[MT][NT][4], const uint32_t qf[MT][KCHUNKS][4], uint32_t sK, int lane) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KCHUNKS; kk++) {
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];
            load_b_nk(b, sK, np * 16, kk, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma_bf16_16816(s[mt][2 * np], qf[mt][kk], b[0], b[1]);
                mma_bf16_16816(s[mt][2 * np + 1], qf[mt][kk], b[2], b[3]);
            }
        }
    }
}

// -inf where key > query (causal) or key >= T. row0: query index of the warp's first row,
// col0: key index of the tile's first column.
template <int MT, int NT>
__device__ __forceinline__ void fwd_mask(float s[MT][NT][4], int row0, int col0, int T, int lane) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = row0 + mt * 16 + (lane >> 2) + (e >> 1) * 8;
                const int col = col0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                if (col > row || col >= T) s[mt][nt][e] = -INFINITY;
            }
}

// Online softmax step: raise the running max m with this tile's scores, rescale the running
// sum l and the output accumulator o by exp(m_old - m_new), and turn s into probabilities
// exp(s - m_new) (unnormalized). Everything in log2 units: exp(x * scale) = 2^(x * scale * log2 e).
// Each row's 8*NT scores live in the 4 lanes of a quad (lane & 3): the max is reduced over the
// quad; l stays a per-lane partial sum until the end.
// fwd_softmax_p does all but the rescaling of o, returning its factors in alpha (the Hopper
// kernel's pipelined stage rescales o later, once the previous P V product has landed).
// POLY_EVERY > 0: every POLY_EVERY-th n8 tile of scores goes through exp2_poly (FMA pipe), the
// rest through the MUFU, so both units share the work (the Hopper forward's stages 6, 7).
template <int MT, int NT, int POLY_EVERY = 0>
__device__ __forceinline__ void fwd_softmax_p(float s[MT][NT][4], float m[MT][2], float l[MT][2], float alpha_out[MT][2]) {
    constexpr float sl2 = SCALE * LOG2E;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = m[mt][r];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // a row that has seen only masked scores keeps m = -inf: use 0 so no inf - inf = NaN
            const float mu = mx == -INFINITY ? 0.f : mx * sl2;
            const float alpha = fast_exp2(m[mt][r] * sl2 - mu);  // m_old = -inf -> 0
            m[mt][r] = mx;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; e++) {
                    const float x = fmaf(s[mt][nt][e], sl2, -mu);
                    constexpr int every = POLY_EVERY > 0 ? POLY_EVERY : NT + 1;  // 0: none
                    const float p = nt % every == every - 1 ? exp2_poly(x) : fast_exp2(x);
                    s[mt][nt][e] = p;
                    sum += p;
                }
            l[mt][r] = l[mt][r] * alpha + sum;
            alpha_out[mt][r] = alpha;
        }
}
template <int MT>
__device__ __forceinline__ void fwd_rescale(float o[MT][DTILES][4], const float alpha[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[mt][dt][e] *= alpha[mt][e >> 1];
}
template <int MT, int NT>
__device__ __forceinline__ void fwd_softmax(float s[MT][NT][4], float o[MT][DTILES][4], float m[MT][2], float l[MT][2]) {
    float alpha[MT][2];
    fwd_softmax_p<MT, NT>(s, m, l, alpha);
    fwd_rescale<MT>(o, alpha);
}

// O (16*MT x 64) += P (regs, bf16) V (shared tile, rows = keys)
template <int MT, int NT>
__device__ __forceinline__ void fwd_pv(float o[MT][DTILES][4], const float p[MT][NT][4], uint32_t sV, int lane) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) c_to_a(a[mt], p[mt][2 * kk], p[mt][2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < DTILES / 2; np++) {
            uint32_t b[4];
            load_b_kn(b, sV, kk * 16, np, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma_bf16_16816(o[mt][2 * np], a[mt], b[0], b[1]);
                mma_bf16_16816(o[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    }
}

// grid (H, B, ceil(T / FWD_BR)); the z index is reversed so the longest (last) query tiles start first
__global__ void __launch_bounds__(FWD_THREADS, 2)
    attention_forward_kernel(__nv_bfloat16 *__restrict__ out, float *__restrict__ lse, const __nv_bfloat16 *__restrict__ q,
                             const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v, int T, int H, int KV) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int h = blockIdx.x, b = blockIdx.y;
    const int mb = gridDim.z - 1 - blockIdx.z;
    const int kh = h / (H / KV);
    const int q0 = mb * FWD_BR;
    const size_t qstride = (size_t)H * HD, kvstride = (size_t)KV * HD;
    // seek to q[b, 0, h, :], k[b, 0, kh, :], v[b, 0, kh, :]; row t is t * stride further
    const __nv_bfloat16 *qb = q + ((size_t)b * T * H + h) * HD;
    const __nv_bfloat16 *kb = k + ((size_t)b * T * KV + kh) * HD;
    const __nv_bfloat16 *vb = v + ((size_t)b * T * KV + kh) * HD;
    const uint32_t sQ = smem_u32(smem);
    const uint32_t sK0 = sQ + FWD_BR * ROW_BYTES, sV0 = sK0 + 2 * FWD_BC * ROW_BYTES;
    constexpr uint32_t KV_STAGE = FWD_BC * ROW_BYTES;

    // key tiles 0..n_tiles-1 cover keys up to the tile's last valid query row; walk them from
    // the diagonal down, so the masked ones come first and the rest run unmasked
    const int q_last = min(T, q0 + FWD_BR) - 1;
    const int n_tiles = q_last / FWD_BC + 1;

    load_tile_async<FWD_BR, FWD_THREADS>(sQ, qb, q0, T, qstride, tid);
    load_tile_async<FWD_BC, FWD_THREADS>(sK0, kb, (n_tiles - 1) * FWD_BC, T, kvstride, tid);
    load_tile_async<FWD_BC, FWD_THREADS>(sV0, vb, (n_tiles - 1) * FWD_BC, T, kvstride, tid);
    cp_async_commit();

    const int wrow0 = q0 + warp * FWD_WARP_ROWS;  // this warp's first query row
    const bool warp_has_rows = wrow0 < T;
    uint32_t qf[FWD_MT][KCHUNKS][4];
    float o[FWD_MT][DTILES][4], m[FWD_MT][2], l[FWD_MT][2];
#pragma unroll
    for (int mt = 0; mt < FWD_MT; mt++) {
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[mt][dt][e] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }

    for (int it = 0; it < n_tiles; it++) {
        const int kt = n_tiles - 1 - it, col0 = kt * FWD_BC;
        const uint32_t stage = (uint32_t)(it & 1);
        // tile `it` has landed (it is the only group in flight), and every warp is done with
        // tile it-1, whose buffers the next loads overwrite
        cp_async_wait_all();
        __syncthreads();
        if (kt > 0) {
            load_tile_async<FWD_BC, FWD_THREADS>(sK0 + (stage ^ 1) * KV_STAGE, kb, col0 - FWD_BC, T, kvstride, tid);
            load_tile_async<FWD_BC, FWD_THREADS>(sV0 + (stage ^ 1) * KV_STAGE, vb, col0 - FWD_BC, T, kvstride, tid);
        }
        cp_async_commit();
        if (it == 0) {
#pragma unroll
            for (int mt = 0; mt < FWD_MT; mt++) load_a_frags(qf[mt], sQ, warp * FWD_WARP_ROWS + mt * 16, lane);
        }
        // warp-uniform skip: no rows in the sequence, or every key of the tile is above the diagonal
        if (!warp_has_rows || col0 > wrow0 + FWD_WARP_ROWS - 1) continue;

        float s[FWD_MT][FWD_NT][4];
        fwd_qk<FWD_MT, FWD_NT>(s, qf, sK0 + stage * KV_STAGE, lane);
        if (col0 + FWD_BC - 1 > wrow0) fwd_mask<FWD_MT, FWD_NT>(s, wrow0, col0, T, lane);
        fwd_softmax<FWD_MT, FWD_NT>(s, o, m, l);
        fwd_pv<FWD_MT, FWD_NT>(o, s, sV0 + stage * KV_STAGE, lane);
    }
    cp_async_wait_all();  // nothing should be in flight, but never exit with copies pending

    // epilogue: O / l as bf16, lse = m * scale + ln(l)
    if (!warp_has_rows) return;
#pragma unroll
    for (int mt = 0; mt < FWD_MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float lt = l[mt][r];
            lt += __shfl_xor_sync(0xffffffffu, lt, 1);
            lt += __shfl_xor_sync(0xffffffffu, lt, 2);
            const int row = wrow0 + mt * 16 + (lane >> 2) + r * 8;
            if (row >= T) continue;
            const float inv = lt > 0.f ? 1.f / lt : 0.f;
            __nv_bfloat16 *orow = out + (((size_t)b * T + row) * H + h) * HD + (lane & 3) * 2;
#pragma unroll
            for (int dt = 0; dt < DTILES; dt++)
                *reinterpret_cast<__nv_bfloat162 *>(orow + dt * 8) =
                    __floats2bfloat162_rn(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
            if ((lane & 3) == 0)
                lse[((size_t)b * H + h) * T + row] =
                    lt > 0.f ? (m[mt][r] * (SCALE * LOG2E) + fast_log2(lt)) * LN2 : -INFINITY;
        }
}

// ----------------------------------------------------------------------------
// backward

// D[b,h,t] = dout[b,t,h] . out[b,t,h]; lse2 = lse * log2(e) (a row with lse = -inf, i.e. no
// visible key, gets +inf so its probabilities come out 0); dq_acc row zeroed (dq_acc null: the
// accumulator is zero already, AttnBwdPrepared::dq_zero, and is not written).
// 8 threads per (b, t, h) row, 8 elements each: a lane's part of the dot product, added in the
// order below (explicit _rn operations: both preprocess kernels give the same bits), then over
// the row's 8 lanes by a butterfly.
__device__ __forceinline__ float pre_dot8(const uint4 &dv, const uint4 &ov) {
    const __nv_bfloat162 *d2 = reinterpret_cast<const __nv_bfloat162 *>(&dv);
    const __nv_bfloat162 *o2 = reinterpret_cast<const __nv_bfloat162 *>(&ov);
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 a = __bfloat1622float2(d2[i]), c = __bfloat1622float2(o2[i]);
        acc = __fadd_rn(acc, __fmaf_rn(a.x, c.x, __fmul_rn(a.y, c.y)));
    }
    return acc;
}
__device__ __forceinline__ float pre_row_sum(float acc) {  // the 8 lanes of a row are aligned groups of 8
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 1));
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 2));
    return __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 4));
}
__device__ __forceinline__ float pre_lse2(float x) { return x == -INFINITY ? INFINITY : x * LOG2E; }

// version 1: one row part per thread, 64-bit indices. dout null: D is the caller's already (not
// written: AttnBwdPrepared::D)
__global__ void attention_backward_preprocess_kernel(float *__restrict__ Dd, float *__restrict__ lse2,
                                                     float *__restrict__ dq_acc, const __nv_bfloat16 *__restrict__ dout,
                                                     const __nv_bfloat16 *__restrict__ out,
                                                     const float *__restrict__ lse, int B, int T, int H) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t row = idx / 8, rows = (size_t)B * T * H;
    const int part = (int)(idx % 8);
    const bool valid = row < rows;
    float acc = 0.f;
    if (valid && dout) {
        const uint4 dv = *reinterpret_cast<const uint4 *>(dout + row * HD + part * 8);
        const uint4 ov = *reinterpret_cast<const uint4 *>(out + row * HD + part * 8);
        acc = pre_dot8(dv, ov);
    }
    if (valid && dq_acc) {
        float4 *z = reinterpret_cast<float4 *>(dq_acc + row * HD + part * 8);
        z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
        z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    acc = pre_row_sum(acc);  // every lane takes part
    if (valid && part == 0) {
        const int h = (int)(row % H);
        const size_t bt = row / H;
        const int t = (int)(bt % T), b = (int)(bt / T);
        const size_t o = ((size_t)b * H + h) * T + t;
        if (dout) Dd[o] = acc;
        lse2[o] = pre_lse2(lse[o]);
    }
}

// version 2, the same results bit for bit: each thread takes PRE_ROWS row parts PRE_STEP rows
// apart (a block: PRE_ROWS * 32 consecutive rows, 256 threads), issues all its loads (dout, out,
// and lse for the rows' first lanes) before any math, 32-bit row indices (the launcher checks).
constexpr int PRE_THREADS = 256, PRE_STEP = PRE_THREADS / 8, PRE_ROWS = 4;
__global__ void __launch_bounds__(PRE_THREADS) attention_backward_preprocess_v2_kernel(
    float *__restrict__ Dd, float *__restrict__ lse2, float *__restrict__ dq_acc, const __nv_bfloat16 *__restrict__ dout,
    const __nv_bfloat16 *__restrict__ out, const float *__restrict__ lse, int T, int H, int rows) {
    const int part = threadIdx.x & 7, row0 = blockIdx.x * PRE_ROWS * PRE_STEP + (threadIdx.x >> 3);
    uint4 dv[PRE_ROWS], ov[PRE_ROWS];
    float x[PRE_ROWS];
    unsigned o[PRE_ROWS];  // (b, h, t) of each row in the D / lse layout
#pragma unroll
    for (int j = 0; j < PRE_ROWS; j++) {
        const unsigned row = (unsigned)(row0 + j * PRE_STEP);
        const bool valid = row < (unsigned)rows;
        const size_t at = (size_t)row * HD + part * 8;
        dv[j] = valid ? __ldcs(reinterpret_cast<const uint4 *>(dout + at)) : make_uint4(0, 0, 0, 0);
        ov[j] = valid ? __ldcs(reinterpret_cast<const uint4 *>(out + at)) : make_uint4(0, 0, 0, 0);
        const unsigned h = row % (unsigned)H, bt = row / (unsigned)H, t = bt % (unsigned)T, b = bt / (unsigned)T;
        o[j] = (b * (unsigned)H + h) * (unsigned)T + t;
        x[j] = valid && part == 0 ? lse[o[j]] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < PRE_ROWS; j++) {
        const unsigned row = (unsigned)(row0 + j * PRE_STEP);
        if (row < (unsigned)rows && dq_acc) {
            float4 *z = reinterpret_cast<float4 *>(dq_acc + (size_t)row * HD + part * 8);
            z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
            z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
#pragma unroll
    for (int j = 0; j < PRE_ROWS; j++) {
        float mine = pre_dot8(dv[j], ov[j]);
#ifdef BREAK_ATTN_PRE  // a deliberately wrong variant (dev/broken_variants.sh): each row's last 8 elements left out of D
        if (part == 7) mine = 0.f;
#endif
        const float acc = pre_row_sum(mine);  // every lane takes part
        if ((unsigned)(row0 + j * PRE_STEP) < (unsigned)rows && part == 0) {
            Dd[o[j]] = acc;
            lse2[o[j]] = pre_lse2(x[j]);
        }
    }
}

// version 3, the same results bit for bit: the rows are walked in (b, t, h) order but D, lse and
// lse2 are (b, h, t), so in versions 1 and 2 each warp store of D or lse2 (and each lse load)
// touches one 32-byte sector per row for 4 useful bytes, and the lse load waits for the row sum
// (v1). Here a block takes PRE3_TILE / H consecutive t of one b, all H heads (PRE3_TILE rows,
// one contiguous run of dout and out), and each group of 8 lanes one head h and PRE3_RUN = 8
// consecutive t: every thread has its 8 rows' dout and out parts (16 loads of 16 bytes) and one
// lse in flight before any math. A row's butterfly (pre_row_sum) leaves the same bits in all 8
// lanes of the group (each step adds the same two values in either order), so lane j keeps row
// j's sum: the group reads lse and writes D and lse2 of (b, h, t..t+7) as one 32-byte run, a warp
// 4 whole sectors per store. dout null (D prepared by the caller): lse2 (and the zeroing) only.
// Needs H a power of two <= 32 (the launcher checks; h_shift = log2 H).
constexpr int PRE3_THREADS = 256, PRE3_RUN = 8, PRE3_TILE = PRE3_THREADS / 8 * PRE3_RUN;  // rows per block
template <bool DOT>
__global__ void __launch_bounds__(PRE3_THREADS) attention_backward_preprocess_v3_kernel(
    float *__restrict__ Dd, float *__restrict__ lse2, float *__restrict__ dq_acc, const __nv_bfloat16 *__restrict__ dout,
    const __nv_bfloat16 *__restrict__ out, const float *__restrict__ lse, int T, int H, int h_shift) {
    const int part = threadIdx.x & 7, grp = threadIdx.x >> 3;
    const int h = grp & (H - 1);
    const int t0 = (int)blockIdx.x * (PRE3_TILE >> h_shift) + (grp >> h_shift) * PRE3_RUN;  // the group's first t
    const int b = blockIdx.y;
    // element offset of row (b, t0, h) at this part; row t0 + j is j * H * HD further
    const size_t base = (((size_t)b * T + t0) * H + h) * HD + part * 8;
    const unsigned step = (unsigned)H * HD;
    uint4 dv[PRE3_RUN], ov[PRE3_RUN];
    if (DOT) {
#pragma unroll
        for (int j = 0; j < PRE3_RUN; j++) {
            const bool valid = t0 + j < T;
            dv[j] = valid ? *reinterpret_cast<const uint4 *>(dout + base + j * step) : make_uint4(0, 0, 0, 0);
            ov[j] = valid ? *reinterpret_cast<const uint4 *>(out + base + j * step) : make_uint4(0, 0, 0, 0);
        }
    }
    const bool mine = t0 + part < T;  // this lane's t in the run: t0 + part
    const size_t o = ((size_t)b * H + h) * T + t0 + part;
    const float x = mine ? lse[o] : 0.f;
    if (dq_acc) {  // lane `part` zeroes float4s part and part + 8 of the row: each store fills whole
                   // sectors (v1's two adjacent float4s per lane, each store half of every sector,
                   // ran at half speed in this kernel's order: 110 against 61 us, H200, seed shape)
#pragma unroll
        for (int j = 0; j < PRE3_RUN; j++)
            if (t0 + j < T) {
                float4 *z = reinterpret_cast<float4 *>(dq_acc + (base - part * 8) + j * step) + part;
                z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
                z[8] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
    }
    float d = 0.f;
    if (DOT) {
#pragma unroll
        for (int j = 0; j < PRE3_RUN; j++) {
            const float acc = pre_row_sum(pre_dot8(dv[j], ov[j]));  // every lane takes part
#ifdef BREAK_PRE3  // a deliberately wrong variant (dev/broken_variants.sh): lane j keeps row j + 1's sum
            if (part == ((j + 1) & 7)) d = acc;
#else
            if (part == j) d = acc;
#endif
        }
    }
    if (mine) {
        if (DOT) Dd[o] = d;
        lse2[o] = pre_lse2(x);
    }
}

// dq = bf16(dq_acc * scale) (+ dq when accumulating); 8 elements per thread
__global__ void attention_backward_dq_kernel(__nv_bfloat16 *__restrict__ dq, const float *__restrict__ dq_acc, size_t n8,
                                             bool accumulate) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    const float4 a = reinterpret_cast<const float4 *>(dq_acc)[2 * i];
    const float4 c = reinterpret_cast<const float4 *>(dq_acc)[2 * i + 1];
    float x[8] = {a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w};
    uint4 prev = make_uint4(0, 0, 0, 0);
    if (accumulate) prev = reinterpret_cast<const uint4 *>(dq)[i];
    const __nv_bfloat162 *p2 = reinterpret_cast<const __nv_bfloat162 *>(&prev);
    uint4 res;
    uint32_t *r = reinterpret_cast<uint32_t *>(&res);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float lo = x[2 * j] * SCALE, hi = x[2 * j + 1] * SCALE;
        if (accumulate) {
            const float2 p = __bfloat1622float2(p2[j]);
            lo += p.x;
            hi += p.y;
        }
        r[j] = pack_bf16(lo, hi);
    }
    reinterpret_cast<uint4 *>(dq)[i] = res;
}

// One step of the backward for one warp's 16 keys against one 64-row query tile:
//   S^T = K Q^T, P^T = 2^(S^T scale log2e - lse2), dP^T = V dO^T, dS^T = P^T (dP^T - D),
//   dV += P^T dO, dK += dS^T Q, and dS^T (bf16) into shared memory for the dQ step.
// key0: this warp's first key, q0: the tile's first query.
__device__ __forceinline__ void bwd_step_warp(float dk[DTILES][4], float dv[DTILES][4], uint32_t sK, uint32_t sV,
                                              int kv_row0, uint32_t sQ, uint32_t sdO,
                                              const float *sL, const float *sD, uint32_t sdS, int dS_row0, int key0,
                                              int q0, int T, bool need_mask, int lane) {
    constexpr float sl2 = SCALE * LOG2E;
    float s[BWD_NT][4], dp[BWD_NT][4];
#pragma unroll
    for (int nt = 0; nt < BWD_NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.f;
    // S^T and dP^T (16 keys x 64 queries), k = head_dim. The K and V fragments (A operands) are
    // re-read from shared memory per k-step rather than held in registers: 32 registers
    // cheaper for 8 of the ~90 ldmatrix of a step, and it keeps the kernel free of spills.
    const int arow = kv_row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < KCHUNKS; kk++) {
        uint32_t kf[4], vf[4];
        ldmatrix_x4(kf, sK + swz(arow, 2 * kk + (lane >> 4)));
        ldmatrix_x4(vf, sV + swz(arow, 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BWD_NT / 2; np++) {
            uint32_t b[4];
            load_b_nk(b, sQ, np * 16, kk, lane);
            mma_bf16_16816(s[2 * np], kf, b[0], b[1]);
            mma_bf16_16816(s[2 * np + 1], kf, b[2], b[3]);
            load_b_nk(b, sdO, np * 16, kk, lane);
            mma_bf16_16816(dp[2 * np], vf, b[0], b[1]);
            mma_bf16_16816(dp[2 * np + 1], vf, b[2], b[3]);
        }
    }
    // P^T and dS^T in place (s <- P, dp <- dS); element e: key = key0 + lane/4 + 8(e/2),
    // query = q0 + 8nt + 2(lane%4) + e%2
#pragma unroll
    for (int nt = 0; nt < BWD_NT; nt++) {
        const int qc = nt * 8 + (lane & 3) * 2;
        const float2 l2 = *reinterpret_cast<const float2 *>(sL + qc);
        const float2 dd = *reinterpret_cast<const float2 *>(sD + qc);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float lq = (e & 1) ? l2.y : l2.x, dq_ = (e & 1) ? dd.y : dd.x;
            float p = fast_exp2(fmaf(s[nt][e], sl2, -lq));
            if (need_mask) {
                const int key = key0 + (lane >> 2) + (e >> 1) * 8, qi = q0 + qc + (e & 1);
                if (key > qi || qi >= T) p = 0.f;
            }
            s[nt][e] = p;
            dp[nt][e] = p * (dp[nt][e] - dq_);
        }
    }
    // dV += P^T dO and dK += dS^T Q (k = the 64 queries)
#pragma unroll
    for (int kk = 0; kk < BWD_NT / 2; kk++) {
        uint32_t ap[4], ads[4];
        c_to_a(ap, s[2 * kk], s[2 * kk + 1]);
        c_to_a(ads, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < DTILES / 2; np++) {
            uint32_t b[4];
            load_b_kn(b, sdO, kk * 16, np, lane);
            mma_bf16_16816(dv[2 * np], ap, b[0], b[1]);
            mma_bf16_16816(dv[2 * np + 1], ap, b[2], b[3]);
            load_b_kn(b, sQ, kk * 16, np, lane);
            mma_bf16_16816(dk[2 * np], ads, b[0], b[1]);
            mma_bf16_16816(dk[2 * np + 1], ads, b[2], b[3]);
        }
        // dS^T rows dS_row0 + lane/4 (+8), query columns 16kk + 2(lane%4) (+8): conflict-free stores
        const int r = dS_row0 + (lane >> 2);
        st_shared_b32(sdS + swz(r, 2 * kk) + (lane & 3) * 4, ads[0]);
        st_shared_b32(sdS + swz(r + 8, 2 * kk) + (lane & 3) * 4, ads[1]);
        st_shared_b32(sdS + swz(r, 2 * kk + 1) + (lane & 3) * 4, ads[2]);
        st_shared_b32(sdS + swz(r + 8, 2 * kk + 1) + (lane & 3) * 4, ads[3]);
    }
}

// dQ (rows q0 + 16rg .. +15, columns cg*DW .. +DW-1) += dS (from dS^T in shared) K, added to the
// fp32 accumulator with atomics. Only key chunks that can be below the diagonal are visited.
template <int KEY_WARPS>
__device__ __forceinline__ void bwd_dq_warp(float *dq_acc_bh, size_t dq_stride, uint32_t sdS, uint32_t sK, int k0,
                                            int q0, int T, int rg, int cg, int lane) {
    constexpr int CG = KEY_WARPS / 4;   // column groups
    constexpr int DW = HD / CG;         // columns per warp
    constexpr int NTQ = DW / 8;         // n8 tiles per warp
    constexpr int KC = KEY_WARPS;       // 16-key chunks in the key block
    static_assert(NTQ % 2 == 0, "column groups hold whole 16-column pairs");
    const int qr0 = q0 + rg * 16;
    if (qr0 >= T) return;
    // keys k0 + 16kc .. are all above the diagonal (or past T) once 16kc > min(qr0 + 15, T - 1) - k0
    const int lim = min(qr0 + 15, T - 1) - k0;
    if (lim < 0) return;
    const int kc_end = min(KC, lim / 16 + 1);
    float acc[NTQ][4];
#pragma unroll
    for (int nt = 0; nt < NTQ; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[nt][e] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        if (kc >= kc_end) break;
        uint32_t a[4];
        // A = dS (queries x keys), stored transposed [key][query]: transposing ldmatrix
        ldmatrix_x4_trans(a, sdS + swz(kc * 16 + (lane & 7) + (lane >> 4) * 8, rg * 2 + ((lane >> 3) & 1)));
#pragma unroll
        for (int np = 0; np < NTQ / 2; np++) {
            uint32_t b[4];
            load_b_kn(b, sK, kc * 16, cg * (NTQ / 2) + np, lane);
            mma_bf16_16816(acc[2 * np], a, b[0], b[1]);
            mma_bf16_16816(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = qr0 + (lane >> 2) + r * 8;
        if (row >= T) continue;
        float *dst = dq_acc_bh + (size_t)row * dq_stride + cg * DW + (lane & 3) * 2;
#pragma unroll
        for (int nt = 0; nt < NTQ; nt++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            // 8-byte float atomics exist from sm_90. (16-byte ones, after a lane swap within the
            // quad, measured slower here: 2.83 vs 2.77 ms at the seed shape.)
            atomicAdd(reinterpret_cast<float2 *>(dst + nt * 8), make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]));
#else
            atomicAdd(dst + nt * 8, acc[nt][2 * r]);
            atomicAdd(dst + nt * 8 + 1, acc[nt][2 * r + 1]);
#endif
        }
    }
}

// two adjacent elements of dk and of dv (bf16), written or added to (both backward kernels)
__device__ __forceinline__ void store_dkv_pair(__nv_bfloat16 *pk, __nv_bfloat16 *pv, float k0v, float k1v, float v0v,
                                               float v1v, bool accumulate) {
    __nv_bfloat162 *k2 = reinterpret_cast<__nv_bfloat162 *>(pk), *v2 = reinterpret_cast<__nv_bfloat162 *>(pv);
    if (accumulate) {
        const float2 a = __bfloat1622float2(*k2), c = __bfloat1622float2(*v2);
        k0v += a.x;
        k1v += a.y;
        v0v += c.x;
        v1v += c.y;
    }
    *k2 = __floats2bfloat162_rn(k0v, k1v);
    *v2 = __floats2bfloat162_rn(v0v, v1v);
}

// grid (KV, B, ceil(T / BC)): one CTA per 16*KEY_WARPS keys of one (b, kv head); key block 0
// (the most query tiles) is launched first. Loops over (query head of the group) x (query tiles
// from the diagonal to the end), with Q, dO, lse2, D double-buffered through cp.async.
template <int KEY_WARPS>
__global__ void __launch_bounds__(KEY_WARPS * 32, 8 / KEY_WARPS)
    attention_backward_kernel(__nv_bfloat16 *__restrict__ dk, __nv_bfloat16 *__restrict__ dv, float *__restrict__ dq_acc,
                              const __nv_bfloat16 *__restrict__ dout, const __nv_bfloat16 *__restrict__ q,
                              const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v,
                              const float *__restrict__ lse2, const float *__restrict__ Dd, int T, int H, int KV,
                              bool accumulate) {
    constexpr int BC = 16 * KEY_WARPS, BR = BWD_BR, THREADS = KEY_WARPS * 32;
    constexpr uint32_t Q_STAGE = BR * ROW_BYTES;
    extern __shared__ __align__(128) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int kh = blockIdx.x, b = blockIdx.y, k0 = blockIdx.z * BC;
    const int G = H / KV;
    const size_t qstride = (size_t)H * HD, kvstride = (size_t)KV * HD;
    const uint32_t sK = smem_u32(smem), sV = sK + BC * ROW_BYTES, sdS = sV + BC * ROW_BYTES;
    const uint32_t sQ0 = sdS + BC * ROW_BYTES, sdO0 = sQ0 + 2 * Q_STAGE;
    float *sL0 = reinterpret_cast<float *>(smem + 3 * BC * ROW_BYTES + 4 * Q_STAGE);  // [2][BR]
    float *sD0 = sL0 + 2 * BR;                                                          // [2][BR]

    const __nv_bfloat16 *kb = k + ((size_t)b * T * KV + kh) * HD;
    const __nv_bfloat16 *vb = v + ((size_t)b * T * KV + kh) * HD;
    const int m_first = k0 / BR, n_m = (T - 1) / BR + 1 - m_first;
    const int n_iter = G * n_m;

    // stage `st` <- query tile m of head h: Q, dO rows and their lse2, D
    auto load_stage = [&](int st, int h, int m) {
        const __nv_bfloat16 *qb = q + ((size_t)b * T * H + h) * HD;
        const __nv_bfloat16 *db = dout + ((size_t)b * T * H + h) * HD;
        load_tile_async<BR, THREADS>(sQ0 + st * Q_STAGE, qb, m * BR, T, qstride, tid);
        load_tile_async<BR, THREADS>(sdO0 + st * Q_STAGE, db, m * BR, T, qstride, tid);
        const size_t o = ((size_t)b * H + h) * T;
        for (int i = tid; i < 2 * BR; i += THREADS) {
            const int r = i % BR, t = m * BR + r;
            const bool ok = t < T;
            const float *src = (i < BR ? lse2 : Dd) + o + (ok ? t : 0);
            float *dst = (i < BR ? sL0 : sD0) + st * BR + r;
            cp_async4(smem_u32(dst), src, ok);
        }
    };

    load_tile_async<BC, THREADS>(sK, kb, k0, T, kvstride, tid);
    load_tile_async<BC, THREADS>(sV, vb, k0, T, kvstride, tid);
    load_stage(0, kh * G, m_first);
    cp_async_commit();

    float dkacc[DTILES][4], dvacc[DTILES][4];
#pragma unroll
    for (int dt = 0; dt < DTILES; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dkacc[dt][e] = dvacc[dt][e] = 0.f;
    const int key0 = k0 + warp * 16;  // this warp's keys: key0 .. key0 + 15
    const int rg = warp % 4, cg = warp / 4;  // the warp's row group and column group in the dQ step

    for (int it = 0; it < n_iter; it++) {
        const int hi = it / n_m, m = m_first + it % n_m;
        const int h = kh * G + hi, q0 = m * BR;
        const int st = it & 1;
        // stage `st` has landed, and every warp is done with iteration it-1 (its stage and dS)
        cp_async_wait_all();
        __syncthreads();
        if (it + 1 < n_iter) load_stage(st ^ 1, kh * G + (it + 1) / n_m, m_first + (it + 1) % n_m);
        cp_async_commit();
        // skip when every (key, query) pair of the warp is above the diagonal or the keys are past T
        if (key0 <= q0 + BR - 1 && key0 < T) {
            const bool need_mask = q0 < key0 + 15 || q0 + BR > T;
            bwd_step_warp(dkacc, dvacc, sK, sV, warp * 16, sQ0 + st * Q_STAGE, sdO0 + st * Q_STAGE, sL0 + st * BR, sD0 + st * BR,
                          sdS, warp * 16, key0, q0, T, need_mask, lane);
        } else {
            // the dQ step reads these rows: they must be zero, not stale
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int c = lane * 4 + i;  // 16 rows x 8 chunks = 128 chunks
                st_shared_zero16(sdS + swz(warp * 16 + c / 8, c % 8));
            }
        }
        __syncthreads();  // dS^T complete
        float *dq_bh = dq_acc + ((size_t)b * T * H + h) * HD;
        bwd_dq_warp<KEY_WARPS>(dq_bh, qstride, sdS, sK, k0, q0, T, rg, cg, lane);
    }
    cp_async_wait_all();

    // epilogue: dk *= scale, write (or add to) dk and dv rows key0 + lane/4 (+8)
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int key = key0 + (lane >> 2) + r * 8;
        if (key >= T) continue;
        const size_t off = (((size_t)b * T + key) * KV + kh) * HD + (lane & 3) * 2;
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++) {
            store_dkv_pair(dk + off + dt * 8, dv + off + dt * 8, dkacc[dt][2 * r] * SCALE, dkacc[dt][2 * r + 1] * SCALE,
                           dvacc[dt][2 * r], dvacc[dt][2 * r + 1], accumulate);
        }
    }
}

// ----------------------------------------------------------------------------
// XSA: 8 threads per (token, kv head) pair, 8 elements of head_dim each; the pair's query heads
// are handled by the same 8 threads so v and its norm are read once.

__device__ __forceinline__ void load8(float x[8], const __nv_bfloat16 *p) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(h2[i]);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ uint4 pack8(const float x[8]) {  // the 8 values as bf16, as store8 rounds them
    uint4 u;
    uint32_t *w = reinterpret_cast<uint32_t *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) w[i] = pack_bf16(x[2 * i], x[2 * i + 1]);
    return u;
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float x[8]) { *reinterpret_cast<uint4 *>(p) = pack8(x); }
__device__ __forceinline__ float sum8(float x) {  // over the aligned group of 8 lanes
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 4);
    return x;
}

__global__ void xsa_forward_kernel(__nv_bfloat16 *__restrict__ out, float *__restrict__ vnorm,
                                   const __nv_bfloat16 *__restrict__ y, const __nv_bfloat16 *__restrict__ v, int N, int H,
                                   int KV) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t pair = idx / 8;  // n * KV + kh
    const int part = (int)(idx % 8);
    const bool valid = pair < (size_t)N * KV;
    const size_t pr = valid ? pair : 0;  // invalid lanes compute on pair 0 and write nothing
    const size_t n = pr / KV;
    const int kh = (int)(pr % KV), G = H / KV;
    float vv[8], yy[8];
    load8(vv, v + pr * HD + part * 8);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) ss += vv[i] * vv[i];
    const float nrm = sqrtf(sum8(ss));
    const float inv = 1.f / fmaxf(nrm, NORM_EPS);
#pragma unroll
    for (int i = 0; i < 8; i++) vv[i] *= inv;  // vn
    if (valid && part == 0) vnorm[pr] = nrm;
    for (int g = 0; g < G; g++) {
        const size_t off = (n * H + (size_t)kh * G + g) * HD + part * 8;
        load8(yy, y + off);
        float c = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) c += yy[i] * vv[i];
        c = sum8(c);
#pragma unroll
        for (int i = 0; i < 8; i++) yy[i] -= c * vv[i];
        if (valid) store8(out + off, yy);
    }
}

// One query head's step of xsa_backward, shared by its two versions so that they give the same
// bits by construction: c = y . vn and gg = dout . vn over the row's 8 lanes, then dvn -= c dout +
// gg y and dd (dout in) becomes dy = dout - gg vn (+ prev when accumulating).
__device__ __forceinline__ void xsa_bwd_dots(float &c, float &gg, const float yy[8], const float dd[8], const float vn[8]) {
    c = 0.f, gg = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        c += yy[i] * vn[i];
        gg += dd[i] * vn[i];
    }
    c = sum8(c);
    gg = sum8(gg);
}
__device__ __forceinline__ void xsa_bwd_update(float dvn[8], float dd[8], const float yy[8], const float vn[8], const float prev[8],
                                               float c, float gg, bool accumulate) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        dvn[i] -= c * dd[i] + gg * yy[i];
        dd[i] -= gg * vn[i];
        if (accumulate) dd[i] += prev[i];
    }
}
// and the end: dv = (dvn - vn (vn . dvn)) / |v| (+ prev), with vn . dvn taken as 0 where the
// norm was clamped
__device__ __forceinline__ float xsa_bwd_mdot(const float vn[8], const float dvn[8], bool clamped) {
    float mdot = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) mdot += vn[i] * dvn[i];
    mdot = sum8(mdot);
    return clamped ? 0.f : mdot;
}
__device__ __forceinline__ void xsa_bwd_dv(float dvn[8], const float vn[8], const float prev[8], float mdot, float den, bool accumulate) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        dvn[i] = (dvn[i] - vn[i] * mdot) / den;
        if (accumulate) dvn[i] += prev[i];
    }
}

// dy = dout - (dout . vn) vn; dvn = -sum_g ((y . vn) dout + (dout . vn) y);
// dv = (dvn - vn (vn . dvn)) / |v|, or dvn / eps when the norm was clamped.
// D (B, H, T) fp32, unless null: attention's D = rowsum(dy * y) of the dy stored, summed as the
// backward's preprocess pass sums it (pre_dot8, pre_row_sum: the same bits), with y attention's out
__global__ void xsa_backward_kernel(__nv_bfloat16 *__restrict__ dy, __nv_bfloat16 *__restrict__ dv,
                                    const __nv_bfloat16 *__restrict__ dout, const __nv_bfloat16 *__restrict__ y,
                                    const __nv_bfloat16 *__restrict__ v, const float *__restrict__ vnorm, int N, int H,
                                    int KV, bool accumulate, float *__restrict__ D, int T) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t pair = idx / 8;
    const int part = (int)(idx % 8);
    const bool valid = pair < (size_t)N * KV;
    const size_t pr = valid ? pair : 0;
    const size_t n = pr / KV;
    const int kh = (int)(pr % KV), G = H / KV;
    const float nrm = vnorm[pr];
    const bool clamped = !(nrm > NORM_EPS);
    const float den = clamped ? NORM_EPS : nrm;
    float vn[8], dvn[8], yy[8], dd[8], prev[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    load8(vn, v + pr * HD + part * 8);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        vn[i] /= den;
        dvn[i] = 0.f;
    }
    for (int g = 0; g < G; g++) {
        const size_t off = (n * H + (size_t)kh * G + g) * HD + part * 8;
        load8(yy, y + off);
        load8(dd, dout + off);
        float c, gg;
        xsa_bwd_dots(c, gg, yy, dd, vn);
        if (accumulate && valid) load8(prev, dy + off);
        xsa_bwd_update(dvn, dd, yy, vn, prev, c, gg, accumulate);
        const uint4 du = pack8(dd);
        if (valid) *reinterpret_cast<uint4 *>(dy + off) = du;
        if (D) {  // every lane takes part in the row sum (D is uniform)
#ifdef BREAK_XSA_D  // a deliberately wrong variant (dev/broken_variants.sh): D from dout instead of dy
            const float d = pre_row_sum(pre_dot8(*reinterpret_cast<const uint4 *>(dout + off), pack8(yy)));
#else
            const float d = pre_row_sum(pre_dot8(du, pack8(yy)));  // yy holds y's bf16 values exactly
#endif
            if (valid && part == 0) D[((n / T) * H + (size_t)kh * G + g) * T + n % T] = d;
        }
    }
    const float mdot = xsa_bwd_mdot(vn, dvn, clamped);
    if (accumulate && valid) load8(prev, dv + pr * HD + part * 8);
    xsa_bwd_dv(dvn, vn, prev, mdot, den, accumulate);
    if (valid) store8(dv + pr * HD + part * 8, dvn);
}

// version 2 of xsa_backward, the same results bit for bit (the same arithmetic: both versions'
// math is xsa_bwd_dots / _update / _mdot / _dv): version 1 waits for v and vnorm, then for each query head's y and dout in turn
// (its loop over the G heads cannot issue head g + 1's loads before head g's stores), three
// dependent round trips with 32 bytes in flight per thread; and a warp's 4 pairs are the KV heads
// of one token, so its D store touches 4 sectors (heads T * 4 bytes apart) for 16 bytes. Here G
// is a template argument: every load of a thread (v, vnorm, y and dout of its G heads, and dy, dv
// when accumulating) is issued before any math, 16 (G + 1) + 4 bytes (84 at G = 2; 48 more
// accumulating). A block's XSA2_PAIRS pairs are XSA2_PAIRS / KV whole tokens (KV a power of two
// <= 32: kv_shift = log2 KV) times the KV heads, token fastest: a warp's 4 groups are 4
// consecutive tokens of one kv head, so its D store for query head h is one 16-byte run along t
// (the next warp writes the sector's other half). The loads stay whole sectors (each group's
// rows are 128 contiguous bytes). Staging D through shared memory for 32-byte runs instead needs
// a barrier; it ran 113.5 us against this mapping's 109.4 in one process (H200, seed shape, with
// D), but dev_attention later read 113.3 for this one: no clear winner, and this one is simpler.
// Measured (H200, seed shape, dev_attention --bench-only, 2026-12-03), v1 -> v2: 138.1 -> 106.7 us
// without D, 154.4 -> 113.3 with it (3.6 TB/s; the training backward's call).
// 32-bit offsets: the launcher checks N H HD < 2^31.
constexpr int XSA2_THREADS = 256, XSA2_PAIRS = XSA2_THREADS / 8, XSA2_PAIRS_SHIFT = 5;
static_assert(XSA2_PAIRS == 1 << XSA2_PAIRS_SHIFT, "the pair mapping's shifts");
template <int G>
__global__ void __launch_bounds__(XSA2_THREADS) xsa_backward_v2_kernel(
    __nv_bfloat16 *__restrict__ dy, __nv_bfloat16 *__restrict__ dv, const __nv_bfloat16 *__restrict__ dout,
    const __nv_bfloat16 *__restrict__ y, const __nv_bfloat16 *__restrict__ v, const float *__restrict__ vnorm, int N,
    int kv_shift, bool accumulate, float *__restrict__ D, int T) {
    const int KV = 1 << kv_shift, H = G * KV, ntok = XSA2_PAIRS >> kv_shift;
    const int part = threadIdx.x & 7, lp = threadIdx.x >> 3;  // lp: the pair within the block
    const int nl = lp & (ntok - 1), kh = lp >> (XSA2_PAIRS_SHIFT - kv_shift);
    const int n0 = blockIdx.x * ntok;
    const bool valid = n0 + nl < N;
    const unsigned n = valid ? (unsigned)(n0 + nl) : 0u;  // invalid lanes compute on token 0 and write nothing
    const unsigned pr = n * KV + kh, voff = pr * HD + part * 8, off0 = (n * H + kh * G) * HD + part * 8;
    // every load first
    const float nrm = vnorm[pr];
    const uint4 vraw = *reinterpret_cast<const uint4 *>(v + voff);
    uint4 yr[G], dr[G], py[G], pv = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int g = 0; g < G; g++) {
        yr[g] = *reinterpret_cast<const uint4 *>(y + off0 + g * HD);
        dr[g] = *reinterpret_cast<const uint4 *>(dout + off0 + g * HD);
        py[g] = make_uint4(0, 0, 0, 0);
    }
    if (accumulate && valid) {
#pragma unroll
        for (int g = 0; g < G; g++) py[g] = *reinterpret_cast<const uint4 *>(dy + off0 + g * HD);
        pv = *reinterpret_cast<const uint4 *>(dv + voff);
    }
    // D of (b, h, t) for this token: dD[h * T]
    float *dD = nullptr;
    if (D) {
        const unsigned bb = n / (unsigned)T, t = n - bb * (unsigned)T;
        dD = D + (size_t)bb * H * T + t;
    }
    // then version 1's arithmetic
    const bool clamped = !(nrm > NORM_EPS);
    const float den = clamped ? NORM_EPS : nrm;
    float vn[8], dvn[8], prev[8];
    lyr::unpack8(vn, vraw);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        vn[i] /= den;
        dvn[i] = 0.f;
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        float yy[8], dd[8];
        lyr::unpack8(yy, yr[g]);
        lyr::unpack8(dd, dr[g]);
        float c, gg;
        xsa_bwd_dots(c, gg, yy, dd, vn);
        lyr::unpack8(prev, py[g]);
        xsa_bwd_update(dvn, dd, yy, vn, prev, c, gg, accumulate);
        const uint4 du = pack8(dd);
        if (valid) *reinterpret_cast<uint4 *>(dy + off0 + g * HD) = du;
        if (D) {  // every lane takes part in the row sum (D is uniform); every lane gets its bits
#ifdef BREAK_XSA_D  // a deliberately wrong variant (dev/broken_variants.sh): D from dout instead of dy
            const float d = pre_row_sum(pre_dot8(dr[g], yr[g]));
#else
            const float d = pre_row_sum(pre_dot8(du, yr[g]));  // yr: y's bf16 values, as v1's pack8(yy)
#endif
#ifdef BREAK_XSA2  // a deliberately wrong variant (dev/broken_variants.sh): head h's D lands on head h + 1
            const int hw = (kh * G + g + 1) % H;
#else
            const int hw = kh * G + g;
#endif
            if (valid && part == (g & 7)) dD[(size_t)hw * T] = d;
        }
    }
    const float mdot = xsa_bwd_mdot(vn, dvn, clamped);
    lyr::unpack8(prev, pv);
    xsa_bwd_dv(dvn, vn, prev, mdot, den, accumulate);
    if (valid) store8(dv + voff, dvn);
}

// ----------------------------------------------------------------------------
// shape checks shared by the launchers

inline void check_shapes(const char *who, int B, int T, int H, int KV, int hd) {
    if (hd != HD) fatal_config("attention.cuh: %s: head_dim %d unsupported (the kernels are built for %d)", who, hd, HD);
    if (B < 1 || T < 1 || H < 1 || KV < 1 || H % KV != 0)
        fatal_config("attention.cuh: %s: bad shape B=%d T=%d H=%d KV=%d (need >= 1 and H %% KV == 0)", who, B, T, H, KV);
    if (B > 65535 || H > 65535) fatal_config("attention.cuh: %s: B=%d or H=%d exceeds the grid limit 65535", who, B, H);
}
inline void check_aligned(const char *who, const void *p, const char *name) {
    if ((uintptr_t)p % 16 != 0) fatal_config("attention.cuh: %s: %s is not 16-byte aligned", who, name);
}
inline void check_forward(const char *who, const void *out, const void *q, const void *k, const void *v, int B, int T,
                          int H, int KV, int hd) {
    check_shapes(who, B, T, H, KV, hd);
    check_aligned(who, out, "out");
    check_aligned(who, q, "q");
    check_aligned(who, k, "k");
    check_aligned(who, v, "v");
}

}  // namespace attn

// ----------------------------------------------------------------------------
// the wgmma shapes of the Hopper forward and backward below (the other sm90 primitives, mbarriers,
// TMA, descriptors, setmaxnreg, are cuda_utils.cuh's, namespace sm90). They compile in any build;
// the wgmma instructions only in sm_90a device code (their bodies are empty elsewhere, and
// nothing calls them there: the kernels check __CUDA_ARCH_FEAT_SM90_ALL).

namespace attn {

#define H_WG_D32                                                                                                      \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31}"
#define H_WG_DOUT                                                                                                    \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),     \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

// D (64 x 64 fp32, the m64n64 accumulator fragment) (+)= A B, A and B from shared memory.
// TA / TB: 0 = K-major (the 16 k of a row contiguous), 1 = MN-major (transposed).
// accumulate = 0 overwrites D.
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float d[32], uint64_t da, uint64_t db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " H_WG_D32 ", %32, %33, p, 1, 1, %35, %36;\n}\n"
        : H_WG_DOUT
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA), "n"(TB));
#endif
}
// the same with A (64 x 16 bf16) in registers, laid out as an m16n8k16 A fragment per warp
template <int TB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float d[32], const uint32_t a[4], uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " H_WG_D32
                 ", {%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"
                 : H_WG_DOUT
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(TB));
#endif
}
// D (64 x 32 fp32, 16 registers: the first 4 n8 tiles of the m64n64 fragment) (+)= A B (the backward's stage 7 dQ)
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n32k16_ss(float d[16], uint64_t da, uint64_t db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, "
        "%13, %14, %15}, %16, %17, p, 1, 1, %19, %20;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA), "n"(TB));
#endif
}
#undef H_WG_D32
#undef H_WG_DOUT

}  // namespace attn


// ----------------------------------------------------------------------------
// Hopper backward (sm_90a): wgmma + TMA + mbarriers (stages 1..10 below)
//
// The same math and output contract as attention_backward_kernel above, on Hopper's own path:
// - One CTA (2 warpgroups, 256 threads; stages 3, 4: + a producer warpgroup) owns 128 keys of one (b, kv head); warpgroup w owns
//   keys k0 + 64w .. +63. K and V are TMA-loaded once; the CTA loops over (query head of the
//   GQA group) x (64-row query tiles from the diagonal to the end), and Q, dO (TMA, 4-d tensor
//   maps, so rows past T come back as zeros; a stage completes on its mbarrier) and lse2, D
//   (4-byte cp.async, as their rows are not 16-byte aligned for odd T) stream through a
//   2-stage ring.
// - Per tile and warpgroup (all products wgmma m64n64k16, bf16 in, fp32 accumulate):
//     S^T = K Q^T, dP^T = V dO^T        (A = K / V, B = Q / dO, both from shared memory, K-major)
//     P^T = 2^(S^T scale log2e - lse2), dS^T = P^T (dP^T - D)   (in registers; masked on the diagonal)
//     dV += P^T dO, dK += dS^T Q        (A = P^T / dS^T straight from the accumulator registers,
//                                        B = dO / Q from shared memory, MN-major: transpose bit)
//     dQ_w = dS K_w over the warpgroup's 64 keys (A = dS^T from shared memory, transposed)
//   Stage 1 (the default): the two warpgroups' dQ partials are summed through shared memory
//   and each warpgroup adds half of the 64 x 64 tile to the fp32 accumulator with 8-byte
//   atomics: one atomic per dQ element per (tile, key block), as the mma.sync kernel does.
//   Stage 2 (attention_backward_sm90(..., stage = 2)): each warpgroup writes its fp32 partial
//   to shared memory and adds it with two TMA reduce-adds (cp.reduce.async.bulk.tensor), so
//   the per-element atomics and the CTA barrier of the exchange go (twice the reduce bytes).
//   Stage 3: stage 2, warp specialized: a producer warpgroup (setmaxnreg down to 24; one warp
//   works) feeds the ring through "full" mbarriers and waits on per-stage "empty" ones; the two
//   consumer warpgroups (setmaxnreg up to 240) never meet at a CTA barrier, so one's exp()
//   overlaps the other's GEMMs; warpgroup 1 skips the key block's fully masked first tile.
//   Stage 4: stage 3 with one reduce-add per tile: consumer 0 hands its dQ partial to consumer
//   1 through shared memory and two mbarriers ("dq ready" / "dq free"). Stage 5: stage 4 with
//   a 3-stage ring (the producer two tiles ahead). Stage 6: stage 5 without the wgmma wait after
//   the dQ product: tile it's dQ partial is handed on (and its ring stage released) in tile
//   it + 1, after the wait for its S^T / dP^T and while its dV / dK products run, so each
//   consumer's tensor work runs dQ(it) -> S^T, dP^T(it + 1) back to back. Stage 7: stage 6
//   with dQ split by columns (FA3 style): after a 256-thread barrier of the two consumers (both
//   halves of dS^T stored), consumer w computes dQ[:, 32w .. 32w + 31] = dS K[:, 32w ..] over all
//   128 keys (8 wgmma m64n32k16) and reduce-adds that box itself: no hand-on, no sum, no
//   dq ready / free waits; warpgroup 1 no longer skips the key block's first tile (masked).
//   Stage 8: stage 7 with the dQ staging stores conflict-free (odd rows store their n8 tiles in
//   the order j ^ 2: stage 7's order put rows 2i, 2i + 1 of a half warp on the same banks) and the
//   dK / dV epilogue staged in fp32 through the consumer's dQ buffers, then written with 16-byte
//   stores (full sectors; the fragment stores used 16 of every 32 bytes). Predicted +1-2%: both
//   are a small share of the time. Stage 9: stage 8 with the consumers decoupled: tile it's dQ is
//   issued in tile it + 1, after its dV / dK, waiting on a "dS full" mbarrier (both halves stored,
//   the other half a tile ago) instead of stage 7's barrier; 3 dS^T buffers, each rewritten after
//   a "dS free" mbarrier (both consumers' dQ of tile it - 3 done). Predicted +5-15% if the
//   consumers drift apart (one's exp under the other's products); ~stage 8 if they stay in step.
//   Stage 10: stage 9 with explicit turns (FA3's ping-pong, as the forward's v6): consumer c
//   issues its products only after bar.sync 4 + c (its 128 threads + the other consumer's 128
//   bar.arrive when their turn's issue is done). A turn is dV / dK (it), dQ (it - 1) and the next
//   tile's S^T / dP^T; the dS^T stores, "dS full" arrival and the dQ hand-on come before it, so one
//   consumer's exp / dS^T work runs while the other's products do. Every consumer takes n_iter + 1
//   turns (the first: tile 0's S^T / dP^T alone); consumer 1 arrives once up front (consumer 0
//   goes first) and consumer 0 once after its last turn, so the counts match. Predicted: +10-20%
//   over stage 7 (the forward's ping-pong gained ~1% over v5 there, but the backward's consumers
//   are in lock step today, not merely unordered).
// - Shared tiles use the 128-byte swizzle of TMA (16-byte chunk c of row r at c ^ (r % 8), tile
//   bases 1024-byte aligned), which is also the layout the wgmma descriptors name (swz above).
// - Causal work: the grid's z (key block) is the slowest index, so the key blocks with the most
//   query tiles (z = 0) start first: longest-first without a persistent scheduler.
// Resources (ptxas, sm_90a, -Xptxas -v): stage 1 215 registers, stage 2 177, stages 3..10 168 at
// launch (the consumers reach R175 / R173 / R179 / R221 / R202 / R201 / R199 / R199 (stages 3..10) of their setmaxnreg 240); no spills, no
// serialized-wgmma warnings (C7510-C7520); S^T and dP^T in one commit group (H_SPLIT_SDP);
// shared memory ~100 KB (stage 1) / ~164 KB (2..4) / ~180 KB (5..8) / 196 KB (9, 10), 1 CTA per SM. Written without a GPU
// at hand: build/dev_attention checks every stage and prints "attention_backward
// v0/wgmma[-sN]" side by side; stage 1 stays what attention_backward runs until measured.
// Stages 11..15 (attention_backward_sm90_q128_kernel, after this one) walk 128-query tiles;
// stage 12 is what attention_backward runs. Not yet here: a persistent grid, XSA fused in the
// epilogue.

namespace attn {

constexpr int H_BC = 128;                // keys per CTA (2 warpgroups x 64)
constexpr int H_BR = 64;                 // query rows per tile
constexpr int H_THREADS = 256;
constexpr int H_THREADS_WS = 384;  // stage 3: a producer warpgroup + 2 consumer warpgroups
// S^T and dP^T in two wgmma commit groups (the exp of P^T while dP^T multiplies, 5649177)
// instead of one: a compile-time choice, off. With it, ptxas hoisted the 32 causal-mask compares
// (~300 integer instructions, predicates packed into bit masks) above the first wgmma of every
// tile and ran the exp chain through 4 rotating registers: stage 1 fell from 261 to 217 TFLOP/s
// (H200, seed shape), and stages 2..5 inherited it.
constexpr bool H_SPLIT_SDP = false;
constexpr uint32_t H_KV_BYTES = H_BC * ROW_BYTES;   // one K or V block (16 KB)
constexpr uint32_t H_Q_BYTES = H_BR * ROW_BYTES;    // one Q or dO tile (8 KB)
constexpr uint32_t H_STAT_BYTES = H_BR * 4;         // lse2 or D of one tile
constexpr uint32_t H_STAGE_TX = 2 * H_Q_BYTES;  // bytes of TMA that complete a stage (full boxes)
constexpr uint32_t H_XCH_BYTES = 2 * 4 * 128 * 16;  // the dQ exchange: 2 directions x 16 floats x 128 threads
// shared memory map (offsets from a 1024-byte aligned base)
constexpr uint32_t H_OFF_K = 0, H_OFF_V = H_KV_BYTES, H_OFF_DS = 2 * H_KV_BYTES;
constexpr uint32_t H_OFF_Q = 3 * H_KV_BYTES;             // [2] stages
constexpr uint32_t H_OFF_DO = H_OFF_Q + 2 * H_Q_BYTES;   // [2] stages
constexpr uint32_t H_OFF_X = H_OFF_DO + 2 * H_Q_BYTES;
constexpr uint32_t H_OFF_L = H_OFF_X + H_XCH_BYTES;      // [2] lse2 stages
constexpr uint32_t H_OFF_D = H_OFF_L + 2 * H_STAT_BYTES; // [2] D stages
constexpr uint32_t H_OFF_BAR = H_OFF_D + 2 * H_STAT_BYTES;  // mbarriers: K/V, full[2], empty[2], dq ready[2], dq free[2], full[2], empty[2]
constexpr uint32_t H_BAR_BYTES = 128;                   // room for 9 mbarriers (stage 4 uses them all)
constexpr int H_SMEM = (int)(H_OFF_BAR + H_BAR_BYTES) + 1024;  // + slack to align the base to 1024
// stage 2: each warpgroup stages its fp32 dQ partial (64 x 64, as two 64-row x 32-column
// halves with the 128-byte swizzle) for the TMA reduce-add, in 2 buffers (tile it uses it % 2)
constexpr uint32_t H_DQ_BYTES = H_BR * HD * 4;           // one warpgroup's dQ partial (16 KB)
constexpr uint32_t H_OFF_DQ = (H_OFF_BAR + H_BAR_BYTES + 1023) & ~1023u;  // [warpgroup][2 buffers] (stage 4: [2])
constexpr int H_SMEM2 = (int)(H_OFF_DQ + 4 * H_DQ_BYTES) + 1024;
// stage 5: a third ring stage (Q, dO, then lse2 and D) after the dQ buffers
constexpr uint32_t H_OFF_Q3 = H_OFF_DQ + 4 * H_DQ_BYTES, H_OFF_DO3 = H_OFF_Q3 + H_Q_BYTES;
constexpr uint32_t H_OFF_LD3 = H_OFF_DO3 + H_Q_BYTES;  // lse2 [64] then D [64]
constexpr int H_SMEM5 = (int)(H_OFF_LD3 + 2 * H_STAT_BYTES) + 1024;
static_assert(H_OFF_Q3 % 1024 == 0 && H_OFF_DO3 % 1024 == 0 && H_SMEM5 <= 227 * 1024, "stage 5 ring fits, tiles aligned");
static_assert(H_OFF_Q % 1024 == 0 && H_OFF_DO % 1024 == 0 && H_OFF_X % 1024 == 0, "wgmma/TMA tiles are 1024-aligned");
// stage 9: a third dS^T buffer after stage 5's ring, and 6 more mbarriers ("dS full" [3], "dS
// free" [3]) in the slack between stage 1's barriers and the dQ buffers
constexpr uint32_t H_OFF_DS9 = (H_OFF_LD3 + 2 * H_STAT_BYTES + 1023) & ~1023u;
constexpr uint32_t H_OFF_BAR9 = H_OFF_BAR + H_BAR_BYTES;
constexpr int H_SMEM9 = (int)(H_OFF_DS9 + H_KV_BYTES) + 1024;
static_assert(H_OFF_BAR9 + 6 * 8 <= H_OFF_DQ && H_SMEM9 <= 227 * 1024, "stage 9 barriers and dS^T buffer fit");


// The accumulator columns 16kk..16kk+15 (n8 tiles 2kk, 2kk+1) as the A fragment of k-step kk
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float d[32], int kk) {
    a[0] = pack_bf16(d[8 * kk + 0], d[8 * kk + 1]);
    a[1] = pack_bf16(d[8 * kk + 2], d[8 * kk + 3]);
    a[2] = pack_bf16(d[8 * kk + 4], d[8 * kk + 5]);
    a[3] = pack_bf16(d[8 * kk + 6], d[8 * kk + 7]);
}

// The producer warp's fill of one ring stage (warp-specialized backward stages): lane 0 asks the
// TMA for the ROWS-row Q and dO tiles at query q0 of head h (rows past T come back as zeros; `tx`
// bytes complete the stage), the 32 lanes copy lse2 and D (0 past T: those rows are masked), then
// each lane arrives on `full` (33 arrivals with lane 0's expect_tx).
template <int ROWS>
__device__ __forceinline__ void bwd_fill_stage(uint32_t full, uint32_t tx, uint32_t sq, uint32_t sdo, float *sl, float *sd,
                                               const CUtensorMap *tm_q, const CUtensorMap *tm_do, const float *lse2,
                                               const float *Dd, int lane, int b, int h, int H, int T, int q0) {
    if (lane == 0) {
        mbar_arrive_expect_tx(full, tx);
        tma_load_4d(sq, tm_q, full, 0, h, q0, b);
        tma_load_4d(sdo, tm_do, full, 0, h, q0, b);
    }
#pragma unroll
    for (int r = lane; r < ROWS; r += 32) {
        const bool ok = q0 + r < T;
        const size_t o = ((size_t)b * H + h) * T + q0 + r;
        sl[r] = ok ? lse2[o] : 0.f;
        sd[r] = ok ? Dd[o] : 0.f;
    }
    mbar_arrive(full);
}

// The backward's softmax step on a tile's NJ n8 tiles of queries (accumulator element 4j + e:
// key krow + 8 (e / 2), query q0 + 8j + 2 (lane % 4) + e % 2; sL / sD: the tile's lse2 and D),
// in place: P^T = 2^(S^T scale log2e - lse2) over s, dS^T = P^T (dP^T - D) over dp, both 0 where
// masked (need_mask: the tile crosses the diagonal or the end of the sequence).
// MASK is a template argument, and bwd_p_ds / bwd_p below branch on need_mask once per tile:
// with a runtime flag inside the element loop, ptxas if-converted the mask into ~270 predicate
// and select instructions per warp on every tile (stage 12's SASS), diagonal or not.
template <int NJ, bool MASK>
__device__ __forceinline__ void bwd_p_ds_tile(float *s, float *dp, const float *sL, const float *sD, int lane, int krow, int q0,
                                              int T) {
    constexpr float sl2 = SCALE * LOG2E;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const int qc = j * 8 + (lane & 3) * 2;
        const float2 l2 = *reinterpret_cast<const float2 *>(sL + qc);
        const float2 dd = *reinterpret_cast<const float2 *>(sD + qc);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = 4 * j + e;
            float p = fast_exp2(fmaf(s[i], sl2, -((e & 1) ? l2.y : l2.x)));
            float ds = p * (dp[i] - ((e & 1) ? dd.y : dd.x));
            if constexpr (MASK) {
                const int key = krow + (e >> 1) * 8, qi = q0 + qc + (e & 1);
                if (key > qi || qi >= T) p = ds = 0.f;
            }
            s[i] = p;
            dp[i] = ds;
        }
    }
}
// the same in two steps: P^T alone (while dP^T may still be multiplied), then dS^T (masked
// entries have P^T = 0, so dS^T = 0 there too)
template <int NJ, bool MASK>
__device__ __forceinline__ void bwd_p_tile(float *s, const float *sL, int lane, int krow, int q0, int T) {
    constexpr float sl2 = SCALE * LOG2E;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const int qc = j * 8 + (lane & 3) * 2;
        const float2 l2 = *reinterpret_cast<const float2 *>(sL + qc);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = 4 * j + e;
            float p = fast_exp2(fmaf(s[i], sl2, -((e & 1) ? l2.y : l2.x)));
            if constexpr (MASK) {
                const int key = krow + (e >> 1) * 8, qi = q0 + qc + (e & 1);
                if (key > qi || qi >= T) p = 0.f;
            }
            s[i] = p;
        }
    }
}
template <int NJ>
__device__ __forceinline__ void bwd_p_ds(float *s, float *dp, const float *sL, const float *sD, int lane, bool need_mask,
                                         int krow, int q0, int T) {
    if (need_mask) bwd_p_ds_tile<NJ, true>(s, dp, sL, sD, lane, krow, q0, T);
    else bwd_p_ds_tile<NJ, false>(s, dp, sL, sD, lane, krow, q0, T);
}
template <int NJ>
__device__ __forceinline__ void bwd_p(float *s, const float *sL, int lane, bool need_mask, int krow, int q0, int T) {
    if (need_mask) bwd_p_tile<NJ, true>(s, sL, lane, krow, q0, T);
    else bwd_p_tile<NJ, false>(s, sL, lane, krow, q0, T);
}
template <int NJ>
__device__ __forceinline__ void bwd_ds(float *dp, const float *s, const float *sD, int lane) {
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const float2 dd = *reinterpret_cast<const float2 *>(sD + j * 8 + (lane & 3) * 2);
#pragma unroll
        for (int e = 0; e < 4; e++) dp[4 * j + e] = s[4 * j + e] * (dp[4 * j + e] - ((e & 1) ? dd.y : dd.x));
    }
}

// grid (KV, B, ceil(T / 128)), 256 threads. tm_q / tm_do / tm_k / tm_v: 4-d tensor maps
// (hd, heads, T, B) with 64 x 1 x {64 | 128} x 1 boxes, 128-byte swizzle. lse2 and D: (B, H, T).
// STAGE 1: dQ partials of the two warpgroups summed in shared memory, then fp32 atomics.
// STAGE 2: each warpgroup stages its dQ partial in shared memory and adds it to dq_acc with two
//          TMA reduce-adds (tm_dq: fp32 (hd, H, T, B), 32 x 1 x 64 x 1 boxes, 128-byte swizzle),
//          so no atomics and no CTA barrier for the exchange (one __syncthreads per tile left).
// STAGE 3: warp specialized, 384 threads: warpgroup 0 is the producer (its warp 0 TMA-loads K/V,
//          then streams Q, dO, lse2, D into the 2-stage ring, waiting on per-stage "empty"
//          mbarriers; registers given back with setmaxnreg), warpgroups 1 and 2 are consumers
//          (registers raised to 240) that wait on "full" mbarriers and never sync CTA-wide, so
//          one can run its exp() while the other's GEMMs run. dS^T is double-buffered (the
//          exchange area of stage 1 is its second buffer), dQ as in stage 2.
// STAGE 4: stage 3 with one dQ reduce-add per tile (half the reduce bytes): consumer 0 writes its
//          partial to the tile's buffer and arrives on "dq ready"; consumer 1 adds its own
//          partial to it and issues the reduce-adds, and frees the buffer ("dq free") once the
//          reduce has read it. Consumer 0 may run up to a tile ahead of consumer 1.
// STAGE 5: stage 4 with a 3-stage ring (Q, dO, lse2, D), so the producer can run two tiles ahead.
// STAGE 6: stage 5 with finish_tile (ring release + dQ hand-on) of tile it deferred into tile
//          it + 1, between its dV / dK issue and its dQ issue (the ring holds tiles it, it + 1
//          and the producer's next: 3 stages).
// STAGE 7: stage 6 with dQ split by columns between the consumers (named barrier 3, 256 threads).
// STAGE 8: stage 7 with its shared-memory stores conflict-free (the dQ staging stores) and the
//          dK / dV epilogue staged through shared memory, written with 16-byte stores.
// STAGE 9: stage 8 with the consumers decoupled: tile it's dQ is multiplied in tile it + 1 (after
//          tile it + 1's dV / dK issue), on a 3-buffer dS^T ring with "dS full" / "dS free" mbarriers
//          (256 arrivals each) instead of stage 7's 256-thread barrier per tile.
// STAGE 10: stage 9 with the consumers taking turns on the tensor cores (named barriers 4 + wg,
//          256 threads, as the forward's ping-pong): a turn issues dV / dK (it), dQ (it - 1) and
//          S^T / dP^T (it + 1); the other consumer's exponentials run meanwhile.
template <int STAGE>
__global__ void __launch_bounds__(STAGE >= 3 ? H_THREADS_WS : H_THREADS, 1)
    attention_backward_sm90_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_do,
                                   const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                                   const __grid_constant__ CUtensorMap tm_dq, __nv_bfloat16 *__restrict__ dk, __nv_bfloat16 *__restrict__ dv,
                                   float *__restrict__ dq_acc, const float *__restrict__ lse2,
                                   const float *__restrict__ Dd, int T, int H, int KV, bool accumulate, bool kb_fastest) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
    unsigned char *sbase = smem_raw + (base - smem_u32(smem_raw));
    constexpr bool WS = STAGE >= 3;  // warp specialized: warpgroup 0 produces, 1 and 2 consume (as wg 0, 1)
    // stage 6: tile it's dQ partial is handed on in tile it + 1, while its dV / dK products run
    constexpr bool DEFER = STAGE >= 6;
    static_assert(!(DEFER && H_SPLIT_SDP), "stage 6 counts one commit group for S^T and dP^T");
    // stage 7: dQ split by columns between the consumers (each multiplies all 128 keys' dS into
    // its 32 of the 64 head_dim columns and reduce-adds them itself: no hand-on, no sum)
    constexpr bool DQCOLS = STAGE >= 7;
    constexpr int NDQ = DQCOLS ? 16 : 32;  // dQ accumulator registers
    // stage 8: conflict-free dQ staging stores, dK / dV epilogue through shared memory
    constexpr bool SMEM_EPI = STAGE >= 8;
    // stage 9: dQ of tile it issued in tile it + 1 from a 3-buffer dS^T ring (LAG)
    constexpr bool LAG = STAGE >= 9;
    // stage 10: the consumers take turns issuing their products (named barriers 4, 5)
    constexpr bool PINGPONG = STAGE >= 10;
    // stages 2..4 take the warpgroup index through a shuffle: provably warp-uniform, which ptxas
    // needs to give the producer and consumer branches their own register counts (setmaxnreg;
    // without it stages 3, 4 are capped at 168 registers and serialize wgmma, C7512). Stage 1
    // stays as measured (207 registers; with the shuffle it would take 175).
    const int tid = threadIdx.x, t = tid % 128, warp = t / 32, lane = tid % 32;
    const int wg = (STAGE >= 2 ? __shfl_sync(0xffffffffu, tid / 128, 0) : tid / 128) - (WS ? 1 : 0);
    // which key block: see attn_bwd_grid_order() (kb_fastest: grid (key blocks, KV, B), else (KV, B, key blocks))
    const int kh = kb_fastest ? blockIdx.y : blockIdx.x, b = kb_fastest ? blockIdx.z : blockIdx.y;
    const int k0 = (kb_fastest ? blockIdx.x : blockIdx.z) * H_BC;
    const int G = H / KV;
    const uint32_t sK = base + H_OFF_K, sV = base + H_OFF_V, sdS = base + H_OFF_DS;
    const uint32_t bar_kv = base + H_OFF_BAR;
    // ring stages: 2, or 3 in stages 5, 6 (the third stage's tiles and mbarriers sit apart)
    constexpr int NST = STAGE >= 5 ? 3 : 2;
    auto bar_stage = [&](int st) { return base + H_OFF_BAR + (st < 2 ? 8 + 8 * st : 72); };  // "full"
    auto bar_empty = [&](int st) { return base + H_OFF_BAR + (st < 2 ? 24 + 8 * st : 80); };  // stage 3+: released by the consumers
    auto ring_q = [&](int st) { return base + (st < 2 ? H_OFF_Q + st * H_Q_BYTES : H_OFF_Q3); };
    auto ring_do = [&](int st) { return base + (st < 2 ? H_OFF_DO + st * H_Q_BYTES : H_OFF_DO3); };
    auto ring_l = [&](int st) { return reinterpret_cast<float *>(sbase + (st < 2 ? H_OFF_L + st * H_STAT_BYTES : H_OFF_LD3)); };
    auto ring_d = [&](int st) {
        return reinterpret_cast<float *>(sbase + (st < 2 ? H_OFF_D + st * H_STAT_BYTES : H_OFF_LD3 + H_STAT_BYTES));
    };
    auto bar_dq_ready = [&](int st) { return base + H_OFF_BAR + 40 + 8 * st; };  // stage 4: consumer 0's partial is in
    auto bar_dq_free = [&](int st) { return base + H_OFF_BAR + 56 + 8 * st; };   // stage 4: the reduce has read it
    auto bar_ds_full = [&](int i) { return base + H_OFF_BAR9 + 8 * i; };        // stage 9: both halves of dS^T buffer i stored
    auto bar_ds_free = [&](int i) { return base + H_OFF_BAR9 + 24 + 8 * i; };   // stage 9: both consumers' dQ read it
    // stage 9: dS^T buffer i of 3 (tile it uses it % 3)
    auto ds_buf = [&](int i) { return base + (i == 0 ? H_OFF_DS : i == 1 ? H_OFF_X : H_OFF_DS9); };
    float4 *xch = reinterpret_cast<float4 *>(sbase + H_OFF_X);  // [direction][4][128]
    float *sLw = reinterpret_cast<float *>(sbase + H_OFF_L), *sDw = reinterpret_cast<float *>(sbase + H_OFF_D);

    const int m_first = k0 / H_BR, n_m = (T - 1) / H_BR + 1 - m_first;
    const int n_iter = G * n_m;

    // stage st <- query tile m of head h: Q and dO by TMA (thread 0), lse2 and D by cp.async
    // (threads 0..127, zero past T; they land by the cp.async wait + barrier of the iteration)
    auto issue_stage = [&](int st, int h, int m) {
        if (tid == 0) {
            const uint32_t bar = bar_stage(st);
            mbar_arrive_expect_tx(bar, H_STAGE_TX);
            tma_load_4d(base + H_OFF_Q + st * H_Q_BYTES, &tm_q, bar, 0, h, m * H_BR, b);
            tma_load_4d(base + H_OFF_DO + st * H_Q_BYTES, &tm_do, bar, 0, h, m * H_BR, b);
        }
        if (tid < 2 * H_BR) {
            const int r = tid % H_BR, tq = m * H_BR + r;
            const bool ok = tq < T;
            const size_t o = ((size_t)b * H + h) * T + (ok ? tq : 0);
            float *dst = (tid < H_BR ? sLw : sDw) + st * H_BR + r;
            cp_async4(smem_u32(dst), (tid < H_BR ? lse2 : Dd) + o, ok);
        }
        cp_async_commit();
    };

    if (tid == 0) {
        mbar_init(bar_kv, 1);
        // stage 3: a stage is full after the TMA bytes and the 32 producer lanes' lse2 / D
        // stores (33 arrivals: one with the byte count, 32 plain), empty after all 256 consumers
        for (int st = 0; st < NST; st++) {
            mbar_init(bar_stage(st), WS ? 33 : 1);
            if (WS) mbar_init(bar_empty(st), 2 * 128);
        }
        if (STAGE >= 4) {
            mbar_init(bar_dq_ready(0), 128);
            mbar_init(bar_dq_ready(1), 128);
            mbar_init(bar_dq_free(0), 1);
            mbar_init(bar_dq_free(1), 1);
        }
        if (LAG) {
            for (int i = 0; i < 3; i++) {
                mbar_init(bar_ds_full(i), 2 * 128);
                mbar_init(bar_ds_free(i), 2 * 128);
            }
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        fence_proxy_async();
    }
    __syncthreads();  // (the last CTA-wide barrier of stage 3)
    if (tid == 0) {
        mbar_arrive_expect_tx(bar_kv, 2 * H_KV_BYTES);
        tma_load_4d(sK, &tm_k, bar_kv, 0, kh, k0, b);
        tma_load_4d(sV, &tm_v, bar_kv, 0, kh, k0, b);
    }
    if constexpr (WS) {
        if (wg < 0) {  // the producer warpgroup: 24 registers are plenty; its warps 1..3 leave
            setmaxnreg_dec<24>();
            if (warp != 0) return;
            for (int it = 0; it < n_iter; it++) {
                const int st = it % NST, h = kh * G + it / n_m, q0 = (m_first + it % n_m) * H_BR;
                if (it >= NST) mbar_wait(bar_empty(st), (it / NST - 1) & 1);  // the consumers are done with it - NST
                bwd_fill_stage<H_BR>(bar_stage(st), H_STAGE_TX, ring_q(st), ring_do(st), ring_l(st), ring_d(st), &tm_q, &tm_do,
                                     lse2, Dd, lane, b, h, H, T, q0);
            }
            return;
        }
        setmaxnreg_inc<240>();
    } else {
        issue_stage(0, kh * G, m_first);
    }

    float dkacc[32], dvacc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) dkacc[i] = dvacc[i] = 0.f;
    const int key0 = k0 + wg * 64;                  // this warpgroup's keys: key0 .. key0 + 63
    const int krow = key0 + warp * 16 + lane / 4;   // the key of accumulator rows (e / 2 even); +8 for odd
    const uint32_t sKw = sK + wg * 64 * ROW_BYTES, sVw = sV + wg * 64 * ROW_BYTES;
    // stages 2..5, thread 0 of a warpgroup: dq_acc (tile q0 of head h) += the fp32 tile at sdq,
    // then wait until the reduce of the previous tile has read its buffer (stages 4, 5: and say so)
    auto dq_reduce = [&](uint32_t sdq, int h, int q0, int it) {
        tma_reduce_add_4d(&tm_dq, sdq, 0, h, q0, b);
        tma_reduce_add_4d(&tm_dq, sdq + H_DQ_BYTES / 2, 32, h, q0, b);
        bulk_commit();
        bulk_wait_read<1>();
        if (STAGE >= 4 && it >= 1) mbar_arrive(bar_dq_free((it - 1) & 1));
    };
    mbar_wait(bar_kv, 0);

    // this warpgroup's dQ partial of a tile (stage 6: of the previous tile until finish_tile)
    float dq[32];
    // after tile it's products (and the wgmma wait that covers them): release its ring stage
    // (stages 3+) and add its dQ partial to dq_acc
    auto finish_tile = [&](int it) {
        const int st = it % NST, db = it & 1, h = kh * G + it / n_m, q0 = (m_first + it % n_m) * H_BR;
        (void)st;
        // stage 3: this thread is done with the stage's Q, dO, lse2, D (stage 9 releases it a tile
        // earlier, in the loop)
        if constexpr (WS && !LAG) mbar_arrive(bar_empty(st));
        if constexpr (DQCOLS) {
            // this warpgroup's 64 x 32 columns -> its buffer db (32 fp32 = one 128-byte swizzled
            // row per query; free: thread 0 waited for the reduce of tile it - 2 to read it in the
            // previous finish_tile, before the consumers' barrier), then one reduce-add of its box
            // Stage 8: an 8-byte store is served per half warp (rows row % 8 = 0..3 or 4..7, 32 bytes
            // each); in stage 7's order rows 2i and 2i + 1 land in the same 32 bytes of banks after
            // the swizzle (2-way conflict). Rows with bit 0 set store their n8 tiles in the order
            // j ^ 2, which puts the 4 rows of a half warp on 4 different 32-byte bank groups.
            const uint32_t sdq = base + H_OFF_DQ + (2 * wg + db) * H_DQ_BYTES;
            const int jflip = SMEM_EPI ? ((lane >> 2) & 1) * 2 : 0;
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int jj = j ^ jflip;
                    const float x0 = jflip ? dq[4 * (j ^ 2) + 2 * r] : dq[4 * j + 2 * r];
                    const float x1 = jflip ? dq[4 * (j ^ 2) + 2 * r + 1] : dq[4 * j + 2 * r + 1];
                    const uint32_t a = sdq + row * 128 + (((2 * jj + (lane & 3) / 2) ^ (row & 7)) << 4) + (lane & 1) * 8;
                    asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x0), "f"(x1) : "memory");
                }
            }
            fence_proxy_async();
            // stage 9: no 256-thread barrier between two finish_tile calls, so thread 0 waits for the
            // previous reduce-adds to have read their buffers before this warpgroup barrier: the
            // next finish_tile's stores (to the buffer of tile it - 1) come after it
            if (LAG && t == 0) bulk_wait_read<0>();
            named_bar_sync(1 + wg, 128);
            if (t == 0) {
                tma_reduce_add_4d(&tm_dq, sdq, 32 * wg, h, q0, b);
                bulk_commit();
                if (!LAG) bulk_wait_read<1>();
            }
        } else if constexpr (STAGE == 1) {
            // sum the two partials: warpgroup 0 keeps columns 0..31 (accumulator 0..15), 1 keeps 32..63
            // (indices stay compile-time constants, selected by wg, so dq stays in registers)
            float4 *give = xch + (wg == 0 ? 4 * 128 : 0);  // what the other warpgroup needs
            const float4 *take = xch + (wg == 0 ? 0 : 4 * 128);
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float *o = dq + (4 * c);  // o[i] / o[16 + i]: the half given away by wg 1 / wg 0
                give[c * 128 + t] = wg == 0 ? make_float4(o[16], o[17], o[18], o[19]) : make_float4(o[0], o[1], o[2], o[3]);
            }
            __syncthreads();
            float kept[16];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float4 x = take[c * 128 + t];
                const float *o = dq + (4 * c);
                kept[4 * c + 0] = (wg == 0 ? o[0] : o[16]) + x.x;
                kept[4 * c + 1] = (wg == 0 ? o[1] : o[17]) + x.y;
                kept[4 * c + 2] = (wg == 0 ? o[2] : o[18]) + x.z;
                kept[4 * c + 3] = (wg == 0 ? o[3] : o[19]) + x.w;
            }
            float *dq_bh = dq_acc + ((size_t)b * T * H + h) * HD;
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = q0 + warp * 16 + lane / 4 + 8 * r;
                if (row >= T) continue;
                // n8 tiles wg * 4 + j: columns 32 wg + 8 j + 2 (lane % 4)
                float *dst = dq_bh + (size_t)row * H * HD + wg * 32 + (lane & 3) * 2;
#pragma unroll
                for (int j = 0; j < 4; j++) {
#ifdef BREAK_DQ_RACE  // a deliberately wrong variant (dev/broken_variants.sh): now and then a dQ partial is lost
                    if ((clock() & 1023) == 0) continue;
#endif
                    atomicAdd(reinterpret_cast<float2 *>(dst + j * 8), make_float2(kept[4 * j + 2 * r], kept[4 * j + 2 * r + 1]));
                }
            }
        } else {
            // this warpgroup's partial -> its buffer it % 2 (free: the reduce that read it two
            // tiles ago was waited for by thread 0 before this tile's first barrier), then two
            // reduce-adds (rows past T are clipped by the tensor map). Element 4j + 2r (+1) is
            // row 16 warp + lane / 4 + 8r, column 8j + 2 (lane % 4) (+1): half j / 4, 16-byte
            // chunk 2 (j % 4) + (lane % 4) / 2 of the 128-byte row, swizzled by the row % 8
            // Stage 4: one buffer per tile; consumer 0 stores (once consumer 1's reduce of tile
            // it - 2 has read it), consumer 1 adds (once consumer 0's partial is in) and reduces.
            const uint32_t sdq = base + H_OFF_DQ + (STAGE >= 4 ? db : 2 * wg + db) * H_DQ_BYTES;
            const bool adds = STAGE >= 4 && wg == 1;
            if constexpr (STAGE >= 4) {
                if (wg == 0) {
                    if (it >= 2) mbar_wait(bar_dq_free(db), ((it >> 1) - 1) & 1);
                } else {
                    mbar_wait(bar_dq_ready(db), (it >> 1) & 1);
                }
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const uint32_t a = sdq + (j / 4) * (H_DQ_BYTES / 2) + row * 128 +
                                       (((2 * (j % 4) + (lane & 3) / 2) ^ (row & 7)) << 4) + (lane & 1) * 8;
                    float x0 = dq[4 * j + 2 * r], x1 = dq[4 * j + 2 * r + 1];
                    if (adds) {
                        float y0, y1;
                        asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(y0), "=f"(y1) : "r"(a) : "memory");
                        x0 = y0 + x0;  // consumer 0's partial first: the same order every run
                        x1 = y1 + x1;
                    }
                    asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x0), "f"(x1) : "memory");
                }
            }
            fence_proxy_async();
            if (STAGE >= 4 && wg == 0) {
                mbar_arrive(bar_dq_ready(db));
            } else {
                named_bar_sync(1 + wg, 128);
                if (t == 0) dq_reduce(sdq, h, q0, it);  // stages 2, 3: the other buffer (tile it - 1) is free for it + 1
            }
        }
    };
    int it_pending = -1;  // stage 6: the tile whose dQ partial waits for finish_tile
    // stages 7+: dQ[:, 32 wg ..] = dS K[:, 32 wg ..] over all 128 keys from the dS^T buffer at sds
    // (k-steps of 16 key rows, 2048 bytes; the B slice starts 64 bytes into the row); no commit
    auto dq_cols = [&](uint32_t sds) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 8; kk++)
            wgmma_m64n32k16_ss<1, 1>(dq, wgmma_desc(sds + 2048 * kk), wgmma_desc(sK + 2048 * kk + 64 * wg), kk);
    };
    // stage 10: consumer 1 lets consumer 0 take the first turn
    if constexpr (PINGPONG) {
        if (wg == 1) named_bar_arrive(4, 256);
    }

    for (int it = 0; it < n_iter; it++) {
        const int hi = it / n_m, m = m_first + it % n_m;
        const int q0 = m * H_BR;
        const int st = it % NST, db = it & 1;  // ring stage; dS^T / dQ buffer
        if constexpr (!WS) {
            // every thread is done with iteration it-1: its stage (st ^ 1) and the dQ exchange
            // are free, and this stage's lse2 / D (cp.async) have landed and are visible
            cp_async_wait_all();
            __syncthreads();
            if (it + 1 < n_iter) issue_stage(st ^ 1, kh * G + (it + 1) / n_m, m_first + (it + 1) % n_m);
        }
        mbar_wait(bar_stage(st), (it / NST) & 1);
        // stages 3..5: dS^T alternates between two buffers, so the stores of tile it + 1 never meet
        // the dQ wgmma of tile it that a slower warp of the warpgroup may still be reading
        // (stage 9: three buffers, tile it uses it % 3, see bar_ds_full / bar_ds_free)
        const uint32_t sdSt = LAG ? ds_buf(it % 3) : WS && db ? base + H_OFF_X : sdS, sdSwt = sdSt + wg * 64 * ROW_BYTES;
        if (WS && !DQCOLS && wg == 1 && m == m_first) {
            // stages 3..5: all 64 keys of warpgroup 1 lie above every query of the key block's first
            // tile (P = dS = 0): skip it, warpgroup-uniformly at the loop level. Then the dQ
            // buffer and dS^T buffer rules of the next tile need what this tile would have done:
            // the pending reduce-adds done reading, and a warpgroup barrier after the last dQ wgmma
            // (stage 6: the previous tile finished first, so the reduce-adds stay in tile order)
            if constexpr (DEFER) {
                wgmma_wait<0>();
                reg_fence_first<NDQ>(dq);
                if (it_pending >= 0) finish_tile(it_pending);
                it_pending = -1;
            }
            mbar_arrive(bar_empty(st));
            if (t == 0) {
                if constexpr (STAGE >= 4) {  // consumer 0's partial is the whole tile: reduce it as it is
                    mbar_wait(bar_dq_ready(db), (it >> 1) & 1);
                    dq_reduce(base + H_OFF_DQ + db * H_DQ_BYTES, kh * G + hi, q0, it);
                } else {
                    bulk_wait_read<0>();
                }
            }
            named_bar_sync(1 + wg, 128);
            continue;
        }
        const uint32_t sQ = ring_q(st), sdO = ring_do(st);
        const float *sL = ring_l(st), *sD = ring_d(st);

        // (stages 1, 2: warpgroup 1 on the first tile of a key block has all its keys above the
        // diagonal: it runs anyway, fully masked, since a branch around wgmma made ptxas
        // serialize them, C7520; stages 3..5 skip it at the loop level, above)
        {
            float s[32], dp[32];
            if constexpr (PINGPONG) {
                if (it == 0) named_bar_sync(4 + wg, 256);  // (later turns begin before the dV / dK issue)
            }
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++)  // k = head_dim, 32 bytes per k-step inside the swizzled row
                wgmma_m64n64k16_ss<0, 0>(s, wgmma_desc(sKw + 32 * kk), wgmma_desc(sQ + 32 * kk), kk);
            if constexpr (H_SPLIT_SDP) wgmma_commit();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_m64n64k16_ss<0, 0>(dp, wgmma_desc(sVw + 32 * kk), wgmma_desc(sdO + 32 * kk), kk);
            wgmma_commit();
            if constexpr (PINGPONG) named_bar_arrive(5 - wg, 256);  // the turn ends: the other consumer's begins
            // element 4j + e of an accumulator: key krow + 8 (e / 2), query q0 + 8j + 2 (lane % 4) + e % 2
#ifdef BREAK_WGMMA_BWD  // a deliberately wrong variant (dev/broken_variants.sh): no causal mask
            const bool need_mask = false;
#else
            const bool need_mask = q0 < key0 + 63 || q0 + H_BR > T;
#endif
            if constexpr (!H_SPLIT_SDP) {
                // one commit group: P^T and dS^T in one pass, the exp and the FMAs interleaved
                wgmma_wait<0>();  // (stage 6: with the previous tile's dV, dK and dQ products)
                reg_fence(s);
                reg_fence(dp);
                if constexpr (DEFER) reg_fence_first<NDQ>(dq);
                if constexpr (LAG) {
                    // the wait covered tile it - 1's dV / dK (its Q, dO: release its ring stage) and
                    // tile it - 2's dQ (this consumer is done with dS^T buffer (it - 2) % 3)
                    if (it >= 1) mbar_arrive(bar_empty((it - 1) % NST));
                    if (it >= 2) mbar_arrive(bar_ds_free((it - 2) % 3));
                }
                bwd_p_ds<8>(s, dp, sL, sD, lane, need_mask, krow, q0, T);
            } else {
                // two commit groups: P^T while dP^T is still being multiplied, then dS^T
                wgmma_wait<1>();
                reg_fence(s);
                bwd_p<8>(s, sL, lane, need_mask, krow, q0, T);
                wgmma_wait<0>();
                reg_fence(dp);
                bwd_ds<8>(dp, s, sD, lane);
            }
            // P^T and dS^T as bf16 A fragments, all packed before the fence (registers written
            // between wgmma issues make ptxas insert waits, C7519)
            uint32_t ap[4][4], ads[4][4];
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                acc_to_a(ap[kk], s, kk);
                acc_to_a(ads[kk], dp, kk);
            }
            // dS^T into this warpgroup's 64 rows of sdS for the dQ product: fragment kk holds
            // rows r, r + 8 of query columns 16kk + 2 (lane % 4) (chunk 2kk) and 8 further (2kk + 1)
            const int r = wg * 64 + warp * 16 + lane / 4;
            // stage 9: buffer it % 3 was last read by both consumers' dQ of tile it - 3
            if constexpr (LAG) {
                if (it >= 3) mbar_wait(bar_ds_free(it % 3), (it / 3 - 1) & 1);
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                st_shared_b32(sdSt + swz(r, 2 * kk) + (lane & 3) * 4, ads[kk][0]);
                st_shared_b32(sdSt + swz(r + 8, 2 * kk) + (lane & 3) * 4, ads[kk][1]);
                st_shared_b32(sdSt + swz(r, 2 * kk + 1) + (lane & 3) * 4, ads[kk][2]);
                st_shared_b32(sdSt + swz(r + 8, 2 * kk + 1) + (lane & 3) * 4, ads[kk][3]);
            }
            if constexpr (PINGPONG) {
                // stage 10: the dS^T half announced and tile it - 2's dQ handed on before the turn,
                // so the turn holds only the issues (and the waits on the other consumer's dS^T and
                // the ring, which that consumer's previous turn made ready)
                fence_proxy_async();
                mbar_arrive(bar_ds_full(it % 3));
                if (it >= 2) finish_tile(it - 2);
                named_bar_sync(4 + wg, 256);
            }
            // dV += P^T dO, dK += dS^T Q: k = the 64 queries, 16 rows (2048 bytes) per k-step
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_m64n64k16_rs<1>(dvacc, ap[kk], wgmma_desc(sdO + 2048 * kk));
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_m64n64k16_rs<1>(dkacc, ads[kk], wgmma_desc(sQ + 2048 * kk));
            wgmma_commit();
            // the dS^T stores must reach the async proxy before the warpgroup's wgmma reads them
            fence_proxy_async();
            // stage 6: the previous tile's dQ partial handed on while dV, dK run (the wgmma wait
            // above covered its product; ptxas cannot follow a wait_group 1 across the loop, C7514)
            if constexpr (DEFER) {
                if (it_pending >= 0) finish_tile(it_pending);
            }
            if constexpr (LAG) {
                // stage 9: say this half of dS^T is in, hand on tile it - 2's dQ (the wait above
                // covered it), then multiply tile it - 1's dQ once the other consumer's half of its
                // dS^T is in (stored a tile ago: the wait rarely blocks, so the consumers may drift
                // up to a tile apart instead of meeting at a barrier every tile). Tile 0 multiplies too,
                // whatever buffer 2 holds, without the wait: a branch around the wgmma made ptxas
                // inject a warpgroup.arrive (C7519); tile 1's dQ overwrites the result (accumulate 0)
                if constexpr (!PINGPONG) {
                    mbar_arrive(bar_ds_full(it % 3));
                    if (it >= 2) finish_tile(it - 2);
                }
                if (it >= 1) mbar_wait(bar_ds_full((it - 1) % 3), ((it - 1) / 3) & 1);
                dq_cols(ds_buf((it + 2) % 3));
            } else if constexpr (DQCOLS) {
                // both consumers' dS^T rows are in
                named_bar_sync(3, 256);
                dq_cols(sdSt);
            } else {
                named_bar_sync(1 + wg, 128);
                // dQ_w (queries x head_dim) = dS K_w: k = this warpgroup's 64 keys; both operands
                // are stored key-major, i.e. MN-major
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < 4; kk++)
                    wgmma_m64n64k16_ss<1, 1>(dq, wgmma_desc(sdSwt + 2048 * kk), wgmma_desc(sKw + 2048 * kk), kk);
            }
            wgmma_commit();
            // stage 10: consumer 0's last turn ends here (no S^T / dP^T follows): consumer 1's last
            // turn needs this arrival (consumer 1's first arrival gave consumer 0 its first turn)
            if constexpr (PINGPONG) {
                if (wg == 0 && it == n_iter - 1) named_bar_arrive(5, 256);
            }
            if constexpr (!DEFER) {
                wgmma_wait<0>();
                reg_fence_first<NDQ>(dq);
                reg_fence(dkacc);
                reg_fence(dvacc);
            }
        }
        if constexpr (LAG) {
        } else if constexpr (DEFER) {
            it_pending = it;  // finished in the next tile, while its dV, dK run
        } else {
            finish_tile(it);
        }
    }
    if constexpr (DEFER) {
        wgmma_wait<0>();
        reg_fence_first<NDQ>(dq);
        reg_fence(dkacc);
        reg_fence(dvacc);
        if (it_pending >= 0) finish_tile(it_pending);
    }
    if constexpr (LAG) {  // tile n_iter - 2's dQ hand-on, then the last tile's dQ
        if (n_iter >= 2) finish_tile(n_iter - 2);
        mbar_wait(bar_ds_full((n_iter - 1) % 3), ((n_iter - 1) / 3) & 1);
        dq_cols(ds_buf((n_iter - 1) % 3));
        wgmma_commit();
        wgmma_wait<0>();
        reg_fence_first<NDQ>(dq);
        finish_tile(n_iter - 1);
    }
    if constexpr (STAGE >= 2) {
        if (t == 0) bulk_wait_all();  // the reduce-adds are done before the CTA (and its shared memory) goes
    }

    // epilogue: dk *= scale, write (or add to) dk and dv rows krow (+8)
    if constexpr (SMEM_EPI) {
        // stage 8: the accumulators (fp32, so accumulate rounds once, as below) go to this
        // warpgroup's two dQ buffers (free: thread 0 waited for every reduce-add above), dK * scale
        // in the first, dV in the second, 64 rows of 256 bytes, 16-byte chunk c of row r at
        // c ^ (r % 8). Stores in the conflict-free order of finish_tile (n8 tile j ^ 2 in rows with
        // bit 0 set); then each thread reads 8 columns (2 chunks) of a row and writes them with one
        // 16-byte store: a warp covers 8 rows x 64 bytes, full 32-byte sectors (the fragment
        // stores below use 16 of every 32 bytes).
        named_bar_sync(1 + wg, 128);
        const uint32_t sdk = base + H_OFF_DQ + 2 * wg * H_DQ_BYTES, sdv = sdk + H_DQ_BYTES;
        const int jflip = ((lane >> 2) & 1) * 2;
        auto st2 = [](uint32_t a, float x, float y) { asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x), "f"(y) : "memory"); };
        auto ld4 = [](float *x, uint32_t a) {
            asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(x[0]), "=f"(x[1]), "=f"(x[2]), "=f"(x[3]) : "r"(a) : "memory");
        };
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int jj = j ^ jflip;  // (the values below are selects: no local memory)
                const uint32_t a = row * 256 + (((2 * jj + (lane & 3) / 2) ^ (row & 7)) << 4) + (lane & 1) * 8;
                st2(sdk + a, (jflip ? dkacc[4 * (j ^ 2) + 2 * r] : dkacc[4 * j + 2 * r]) * SCALE,
                    (jflip ? dkacc[4 * (j ^ 2) + 2 * r + 1] : dkacc[4 * j + 2 * r + 1]) * SCALE);
                st2(sdv + a, jflip ? dvacc[4 * (j ^ 2) + 2 * r] : dvacc[4 * j + 2 * r],
                    jflip ? dvacc[4 * (j ^ 2) + 2 * r + 1] : dvacc[4 * j + 2 * r + 1]);
            }
        }
        named_bar_sync(1 + wg, 128);
        // item (row, 8-column group c): the 8 lanes of a quarter warp take rows 8g .. 8g + 7 of one c
        // (conflict-free 16-byte loads: chunk 2c (+1) ^ (row % 8) differs in its low 3 bits)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int rs = t & 7, c = (t >> 3) & 7, row = 8 * ((t >> 6) + 2 * i) + rs, key = key0 + row;
            if (key >= T) continue;
            const size_t off = (((size_t)b * T + key) * KV + kh) * HD + 8 * c;
            const uint32_t a0 = row * 256 + (((2 * c) ^ rs) << 4), a1 = row * 256 + (((2 * c + 1) ^ rs) << 4);
            float xk[8], xv[8];
            ld4(xk, sdk + a0);
            ld4(xk + 4, sdk + a1);
            ld4(xv, sdv + a0);
            ld4(xv + 4, sdv + a1);
            if (accumulate) {
                float ok[8], ov[8];
                load8(ok, dk + off);
                load8(ov, dv + off);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    xk[e] += ok[e];
                    xv[e] += ov[e];
                }
            }
            store8(dk + off, xk);
            store8(dv + off, xv);
        }
    } else {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int key = krow + r * 8;
            if (key >= T) continue;
            const size_t off = (((size_t)b * T + key) * KV + kh) * HD + (lane & 3) * 2;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                store_dkv_pair(dk + off + j * 8, dv + off + j * 8, dkacc[4 * j + 2 * r] * SCALE,
                               dkacc[4 * j + 2 * r + 1] * SCALE, dvacc[4 * j + 2 * r], dvacc[4 * j + 2 * r + 1], accumulate);
            }
        }
    }
#else
    __trap();  // built without sm_90a: attention_backward never launches this (sm90_available)
#endif
}

// This CTA's share of zeroing n4 float4s at p (the next backward call's dQ accumulator,
// AttnBwdPrepared::zero_other), by THREADS threads j = 0..THREADS-1. Grid-stride over the CTAs
// by linear block index: CTA c writes float4s THREADS c + j, THREADS (c + C) + j, ... (C CTAs),
// an even share (within THREADS float4s) whatever order the CTAs run in. The stores are 16-byte
// st.global.cs (evict-first): the zeros go out to DRAM without pushing the kernel's Q, dO and dQ
// lines out of L2, where the grid order keeps them (attn_bwd_grid_order).
template <int THREADS>
__device__ __forceinline__ void bwd_zero_share(float4 *__restrict__ p, size_t n4, int j) {
    const size_t ctas = (size_t)gridDim.x * gridDim.y * gridDim.z;
    const size_t c = blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z);
#ifdef BREAK_DQ_ZERO  // a deliberately wrong variant (dev/broken_variants.sh): the last CTA's share is left out
    if (c == ctas - 1) return;
#endif
    for (size_t i = THREADS * c + j; i < n4; i += THREADS * ctas) __stcs(p + i, make_float4(0.f, 0.f, 0.f, 0.f));
}

// k's per-head RMSNorm + RoPE backward, fused into the q128 kernels' epilogue (AttnBwdPrepared::
// k_rstd): the forward's 1/rms of each (token, kv head) row of c_k's output, (B, T, KV) fp32, and
// the RoPE tables (T, 8) fp32 of ROPE_DIMS = 16 (attention_backward_knorm_fits); k itself (the
// forward's out: RoPE(xn), no gain) is the K tile the CTA holds in shared memory.
struct BwdKNorm {
    const float *rstd = nullptr, *cos_t = nullptr, *sin_t = nullptr;
};
constexpr int KNORM_RD = 16;  // the rotated dims the fused k norm supports (dims 0..7 pair with 8..15)
constexpr int Q128_FIRST = 11;  // the first backward stage on 128-query tiles (the kernel below): the
                                // ones that zero the other dQ accumulator and take the k norm

// The fused k norm backward on a consumer's dK accumulator (the m64n64 fragment: element 4j + 2r
// + e at key row 16 warp + lane / 4 + 8r of the consumer's 64, dim 8j + 2 (lane % 4) + e; a row's
// 64 dims over the 4 lanes of a quad; RoPE partners j = 0 <-> 1 in the same thread), in place:
// d = acc * SCALE (dK), o = k (the forward's out, from the swizzled K tile sKw), xn = RoPE^T(o),
// dy = RoPE^T(d), acc <- rstd (dy - xn mean(d . o)) (sum(xn . dy) = sum(o . d): the rotation is
// orthogonal). The same math as layers.cuh's qk_out_grad8 + qk_norm_grad8 with gain 1, on fp32 dK
// (the unfused path rounds dK to bf16 before it). Rows past T: zeros (K's rows there are zero).
__device__ __forceinline__ void bwd_knorm_rows(float (&acc)[32], uint32_t sKw, const BwdKNorm &kn, int key0, int warp,
                                               int lane, int b, int T, int KV, int kh) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = warp * 16 + lane / 4 + 8 * r, key = key0 + row;
        const bool ok = key < T;
        float d[16], o[16];  // [2j + e]
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t w;
            asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(w) : "r"(sKw + row * ROW_BYTES + ((j ^ (row & 7)) << 4) + (lane & 3) * 4));
            const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w));
            o[2 * j] = f.x, o[2 * j + 1] = f.y;
            d[2 * j] = __fmul_rn(acc[4 * j + 2 * r], SCALE), d[2 * j + 1] = __fmul_rn(acc[4 * j + 2 * r + 1], SCALE);
        }
        float2 cs = make_float2(0.f, 0.f), sn = make_float2(0.f, 0.f);
        float rs = 0.f;
        if (ok) {
            cs = *reinterpret_cast<const float2 *>(kn.cos_t + (size_t)key * (KNORM_RD / 2) + 2 * (lane & 3));
            sn = *reinterpret_cast<const float2 *>(kn.sin_t + (size_t)key * (KNORM_RD / 2) + 2 * (lane & 3));
            rs = kn.rstd[((size_t)b * T + key) * KV + kh];
        }
        float pdo = 0.f;
#pragma unroll
        for (int i = 0; i < 16; i++) pdo = __fmaf_rn(d[i], o[i], pdo);
        pdo = __fadd_rn(pdo, __shfl_xor_sync(0xffffffffu, pdo, 1));
        pdo = __fadd_rn(pdo, __shfl_xor_sync(0xffffffffu, pdo, 2));
        const float m = __fdiv_rn(pdo, (float)HD);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int j = i / 2, e = i % 2;
            const float c = e ? cs.y : cs.x, s_ = e ? sn.y : sn.x;
            float t = d[i], x = o[i];
            if (j == 0) t = qk_rotT_lo(d[i], d[i + 2], c, s_), x = qk_rotT_lo(o[i], o[i + 2], c, s_);
            if (j == 1) t = qk_rotT_hi(d[i], d[i - 2], c, s_), x = qk_rotT_hi(o[i], o[i - 2], c, s_);
#ifdef BREAK_KNORM  // a deliberately wrong variant (dev/broken_variants.sh): k taken for xn without undoing RoPE
            x = o[i];
#endif
            acc[4 * j + 2 * r + e] = __fmul_rn(rs, __fmaf_rn(-x, m, t));
        }
    }
}

// ---- stage 11: 128-query tiles -----------------------------------------------------------------
// Stage 8's CTA (a producer warpgroup + 2 consumers, 128 keys of one (b, kv head), 64 per
// consumer) walking query tiles of 128 rows instead of 64. Per tile and consumer:
//   S^T = K_w Q^T, dP^T = V_w dO^T     m64n128k16 (4 k-steps each; stage 8: m64n64, twice as many tiles)
//   P^T, dS^T (64 keys x 128 queries: 64 + 64 accumulator registers per thread)
//   dV += P^T dO, dK += dS^T Q         m64n64k16, A from registers (8 k-steps)
//   dQ[64 wg .. 64 wg + 63, :] = dS K   m64n64k16 over all 128 keys (8 k-steps), A = dS^T from shared
//                                      memory: each consumer owns 64 query rows of the tile (stage 8:
//                                      32 head_dim columns, m64n32 with both operands from shared memory)
// What it buys over stage 8, per FLOP: half the tiles, so half the mbarrier waits, barriers,
// wgmma waits and reduce-add issues; S^T / dP^T read 6 KB of shared memory per 64-clock m64n128
// instead of 4 KB per 32-clock m64n64 (the SM's 128 bytes a clock made m64n64 with both operands
// in shared memory exactly bandwidth-bound, and stage 8's m64n32 dQ 1.5x over); dQ's product is
// m64n64 (at parity) instead of m64n32. The cost: 192 accumulator registers live across the
// exponentials (s, dp, dK, dV), so nothing of the next tile is issued early (stage 8's DEFER):
// a tile's order is S^T, dP^T -> wait -> exp -> dV -> (both consumers' dS^T stored: barrier) ->
// dQ, dK -> wait for dV and dQ (dK still running) -> dQ staged and reduce-added -> wait for dK.
// Shared memory (offsets from the 1024-aligned base): K, V (16 KB each), dS^T [2 buffers][2
// query halves] (16 KB each: 128 keys x 64 queries, the swizzle atom is 64 bf16 wide), the ring
// [2 stages] of Q, dO (16 KB each), the dQ staging [consumer] (64 rows x 64 fp32 as two 32-column
// boxes of 8 KB), lse2 / D [stage] (512 bytes each), mbarriers.
constexpr int Q128_BR = 128;  // query rows per tile
constexpr uint32_t Q128_Q_BYTES = Q128_BR * ROW_BYTES;  // one Q or dO tile (16 KB)
constexpr uint32_t Q128_DSH_BYTES = H_BC * 64 * 2;      // one query half of dS^T (16 KB)
constexpr uint32_t Q128_DQ_BYTES = 64 * HD * 4;         // one consumer's dQ staging (16 KB)
constexpr uint32_t Q128_OFF_K = 0, Q128_OFF_V = H_KV_BYTES;
constexpr uint32_t Q128_OFF_DS = 2 * H_KV_BYTES;                        // [2 buffers][2 halves]
constexpr uint32_t Q128_OFF_Q = Q128_OFF_DS + 4 * Q128_DSH_BYTES;       // [2 stages]
constexpr uint32_t Q128_OFF_DO = Q128_OFF_Q + 2 * Q128_Q_BYTES;         // [2 stages]
constexpr uint32_t Q128_OFF_DQ = Q128_OFF_DO + 2 * Q128_Q_BYTES;        // [consumer]
constexpr uint32_t Q128_OFF_L = Q128_OFF_DQ + 2 * Q128_DQ_BYTES;        // [2 stages][128] lse2
constexpr uint32_t Q128_OFF_D = Q128_OFF_L + 2 * Q128_BR * 4;           // [2 stages][128] D
constexpr uint32_t Q128_OFF_BAR = Q128_OFF_D + 2 * Q128_BR * 4;         // K/V, full[2], empty[2]
constexpr int Q128_SMEM = (int)(Q128_OFF_BAR + 5 * 8) + 1024;
static_assert(Q128_OFF_DS % 1024 == 0 && Q128_OFF_Q % 1024 == 0 && Q128_OFF_DO % 1024 == 0 && Q128_OFF_DQ % 1024 == 0,
              "wgmma / TMA tiles are 1024-byte aligned");
static_assert(Q128_SMEM <= 227 * 1024, "stage 11 fits in shared memory");

// grid as stage 8's, 384 threads; tm_q / tm_do: boxes of 128 rows (tm_k / tm_v 128, tm_dq 64)
// SPLIT (stages 12, 14): S^T and dP^T in two commit groups, the exponentials of P^T computed
// while dP^T is still being multiplied (stage 11: one group, one wait)
// DK_EARLY (stages 13, 14): dK += dS^T Q issued with dV, before the consumers' barrier (it needs
// only this consumer's registers), so it runs while the other consumer catches up; stage 11
// issues it after dQ, to run under the dQ staging stores.
// INDEP (stage 15): the consumers never wait for each other: each multiplies dQ of all 128 query
// rows over its own 64 keys only (2 x 4 m64n64k16 from its own dS^T, single-buffered, 16 KB) and
// reduce-adds that 128 x 64 partial itself (4 boxes from a 32 KB staging buffer: twice stage
// 11's reduce bytes, as stage 3 did, which the L2-friendly grid order made cheap), so one
// consumer's exponentials can run under the other's products. dK is issued with dV.
// kn (every stage; kn.rstd null: none): k's per-head RMSNorm and RoPE backward in the epilogue
// (bwd_knorm_rows), so dk comes out as the gradient of the c_k projection's output, overwritten
// even when accumulating (only dv adds then): the separate q/k backward pass for k goes.
// zero / zero_n4 (every stage): the other dQ accumulator (AttnBwdPrepared::zero_other), zero_n4
// float4s, null: nothing to zero. The producer warp zeroes this CTA's share (bwd_zero_share)
// once it has issued its last tile's loads, while the consumers work through the last tiles of
// the ring; the kernel is compute-bound, so the ~200 MB of writes at the seed shape, which the
// preprocess pass would otherwise spend, are meant to come for free. Why that warp and not the
// idle warps 1..3 (96 threads): any code at all on their path after setmaxnreg_dec<24> (even one
// compare and a __nanosleep) made ptxas (CUDA 13.0) move values out of uniform registers and
// spill 16 bytes in stage 12, reloaded inside the consumers' tile loop (16 to 48 bytes in the
// other stages); on warp 0's path, after its loop, every stage kept its spill count (none since the
// mask became a template argument of bwd_p / bwd_p_ds; 4 bytes in stages 11 and 13 before).
template <bool SPLIT, bool DK_EARLY, bool INDEP = false>
__global__ void __launch_bounds__(H_THREADS_WS, 1)
    attention_backward_sm90_q128_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_do,
                                        const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                                        const __grid_constant__ CUtensorMap tm_dq, __nv_bfloat16 *__restrict__ dk,
                                        __nv_bfloat16 *__restrict__ dv, float *__restrict__ dq_acc, const float *__restrict__ lse2,
                                        const float *__restrict__ Dd, int T, int H, int KV, bool accumulate, bool kb_fastest,
                                        float4 *__restrict__ zero, size_t zero_n4, BwdKNorm kn) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    (void)dq_acc;
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
    unsigned char *sbase = smem_raw + (base - smem_u32(smem_raw));
    constexpr int BR = Q128_BR, NST = 2;
    const int tid = threadIdx.x, t = tid % 128, warp = t / 32, lane = tid % 32;
    const int wg = __shfl_sync(0xffffffffu, tid / 128, 0) - 1;  // -1: the producer; 0, 1: the consumers
    const int kh = kb_fastest ? blockIdx.y : blockIdx.x, b = kb_fastest ? blockIdx.z : blockIdx.y;
    const int k0 = (kb_fastest ? blockIdx.x : blockIdx.z) * H_BC;
    const int G = H / KV;
    const uint32_t sK = base + Q128_OFF_K, sV = base + Q128_OFF_V;
    const uint32_t bar_kv = base + Q128_OFF_BAR;
    auto bar_full = [&](int st) { return base + Q128_OFF_BAR + 8 + 8 * st; };
    auto bar_empty = [&](int st) { return base + Q128_OFF_BAR + 24 + 8 * st; };
    auto ring_q = [&](int st) { return base + Q128_OFF_Q + st * Q128_Q_BYTES; };
    auto ring_do = [&](int st) { return base + Q128_OFF_DO + st * Q128_Q_BYTES; };
    auto ring_l = [&](int st) { return reinterpret_cast<float *>(sbase + Q128_OFF_L + st * BR * 4); };
    auto ring_d = [&](int st) { return reinterpret_cast<float *>(sbase + Q128_OFF_D + st * BR * 4); };
    auto ds_half = [&](int buf, int half) { return base + Q128_OFF_DS + (2 * buf + half) * Q128_DSH_BYTES; };
    // INDEP: consumer w's dS^T (64 keys x 128 queries as two 8 KB query halves) in the first 32 KB
    // of the dS^T area, its dQ staging (32 KB) in the rest of that area (w = 0) or the dQ area (w = 1)
    auto ds_own = [&](int w, int half) { return base + Q128_OFF_DS + w * (Q128_DSH_BYTES) + half * (Q128_DSH_BYTES / 2); };

    const int m_first = k0 / BR, n_m = (T - 1) / BR + 1 - m_first;
    const int n_iter = G * n_m;

    if (tid == 0) {
        mbar_init(bar_kv, 1);
        for (int st = 0; st < NST; st++) {
            mbar_init(bar_full(st), 33);       // the TMA bytes (one arrival with the count) + 32 lanes' lse2 / D
            mbar_init(bar_empty(st), 2 * 128);  // every consumer thread
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        fence_proxy_async();
    }
    __syncthreads();
    if (tid == 0) {
        mbar_arrive_expect_tx(bar_kv, 2 * H_KV_BYTES);
        tma_load_4d(sK, &tm_k, bar_kv, 0, kh, k0, b);
        tma_load_4d(sV, &tm_v, bar_kv, 0, kh, k0, b);
    }
    if (wg < 0) {  // the producer: one warp streams Q, dO (TMA), lse2 and D into the ring, then
                   // zeroes its share of the next call's dQ accumulator when asked
        setmaxnreg_dec<24>();
        if (warp != 0) return;
        for (int it = 0; it < n_iter; it++) {
            const int st = it % NST, h = kh * G + it / n_m, q0 = (m_first + it % n_m) * BR;
            if (it >= NST) mbar_wait(bar_empty(st), (it / NST - 1) & 1);
            bwd_fill_stage<BR>(bar_full(st), 2 * Q128_Q_BYTES, ring_q(st), ring_do(st), ring_l(st), ring_d(st), &tm_q, &tm_do, lse2,
                               Dd, lane, b, h, H, T, q0);
        }
        if (zero) bwd_zero_share<32>(zero, zero_n4, lane);
        return;
    }
    setmaxnreg_inc<240>();

    float dkacc[32], dvacc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) dkacc[i] = dvacc[i] = 0.f;
    const int key0 = k0 + wg * 64;                  // this consumer's keys: key0 .. key0 + 63
    const int krow = key0 + warp * 16 + lane / 4;   // the key of accumulator rows (e / 2 even); +8 for odd
    const uint32_t sKw = sK + wg * 64 * ROW_BYTES, sVw = sV + wg * 64 * ROW_BYTES;
    const uint32_t sdq = !INDEP ? base + Q128_OFF_DQ + wg * Q128_DQ_BYTES : wg == 0 ? base + Q128_OFF_DS + 2 * Q128_DSH_BYTES : base + Q128_OFF_DQ;
    static_assert(2 * Q128_DQ_BYTES == 2 * Q128_DSH_BYTES, "INDEP: a consumer's 32 KB dQ staging fits either place");
    // rows with bit 0 of (lane / 4) set store their n8 tiles in the order j ^ 2 (stage 8's
    // conflict-free order: otherwise rows 2i, 2i + 1 of a half warp share 32 bytes of banks)
    const int jflip = ((lane >> 2) & 1) * 2;
    mbar_wait(bar_kv, 0);

    for (int it = 0; it < n_iter; it++) {
        const int h = kh * G + it / n_m, q0 = (m_first + it % n_m) * BR;
        const int st = it % NST, db = it & 1;  // ring stage; dS^T buffer
        const uint32_t sQ = ring_q(st), sdO = ring_do(st);
        const float *sL = ring_l(st), *sD = ring_d(st);
        mbar_wait(bar_full(st), (it / NST) & 1);

        float dq[INDEP ? 64 : 32];  // INDEP: [query half][32]
        {
            float s[64], dp[64];
            // the operands' descriptors, once per tile (wgmma_desc_at steps through them)
            const uint64_t dsK = wgmma_desc(sKw), dsQ = wgmma_desc(sQ), dsV = wgmma_desc(sVw), dsO = wgmma_desc(sdO);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++)  // k = head_dim, 32 bytes per k-step inside the swizzled row
                wgmma_m64n128k16_ss(s, wgmma_desc_at(dsK, 32 * kk), wgmma_desc_at(dsQ, 32 * kk), kk > 0);
            if constexpr (SPLIT) wgmma_commit();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_m64n128k16_ss(dp, wgmma_desc_at(dsV, 32 * kk), wgmma_desc_at(dsO, 32 * kk), kk > 0);
            wgmma_commit();
#ifdef BREAK_WGMMA_BWD  // a deliberately wrong variant (dev/broken_variants.sh): no causal mask
            const bool need_mask = false;
#else
            const bool need_mask = q0 < key0 + 63 || q0 + BR > T;
#endif
            // element 4j + e: key krow + 8 (e / 2), query q0 + 8j + 2 (lane % 4) + e % 2
            if constexpr (SPLIT) {
                wgmma_wait<1>();
                reg_fence(s);
                bwd_p<16>(s, sL, lane, need_mask, krow, q0, T);
                wgmma_wait<0>();
                reg_fence(dp);
                bwd_ds<16>(dp, s, sD, lane);
            } else {
                wgmma_wait<0>();
                reg_fence(s);
                reg_fence(dp);
                bwd_p_ds<16>(s, dp, sL, sD, lane, need_mask, krow, q0, T);
            }
            // P^T, dS^T as bf16 A fragments (k-step kk: queries 16kk .. 16kk + 15), all packed
            // before the next wgmma fence
            uint32_t ap[8][4], ads[8][4];
#pragma unroll
            for (int kk = 0; kk < 8; kk++) {
                acc_to_a(ap[kk], s, kk);
                acc_to_a(ads[kk], dp, kk);
            }
            // dS^T into buffer db: key row r (+8) of query half kk / 4, chunks 2 (kk % 4) (+1)
            // (INDEP: this consumer's own buffer, rows of its 64 keys)
            const int r = (INDEP ? 0 : wg * 64) + warp * 16 + lane / 4;
#pragma unroll
            for (int kk = 0; kk < 8; kk++) {
                const uint32_t sh = INDEP ? ds_own(wg, kk / 4) : ds_half(db, kk / 4);
                const int c = 2 * (kk % 4);
                st_shared_b32(sh + swz(r, c) + (lane & 3) * 4, ads[kk][0]);
                st_shared_b32(sh + swz(r + 8, c) + (lane & 3) * 4, ads[kk][1]);
                st_shared_b32(sh + swz(r, c + 1) + (lane & 3) * 4, ads[kk][2]);
                st_shared_b32(sh + swz(r + 8, c + 1) + (lane & 3) * 4, ads[kk][3]);
            }
            // dV += P^T dO: k = the 128 queries, 16 rows (2048 bytes) per k-step
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 8; kk++) wgmma_m64n64k16_rs<1>(dvacc, ap[kk], wgmma_desc_at(dsO, 2048 * kk));
            if constexpr (DK_EARLY || INDEP) {
#pragma unroll
                for (int kk = 0; kk < 8; kk++) wgmma_m64n64k16_rs<1>(dkacc, ads[kk], wgmma_desc_at(dsQ, 2048 * kk));
            }
            wgmma_commit();
            if constexpr (INDEP) {
                // this consumer's dS^T rows are in (every warp's, visible to the async proxy); the
                // buffer's previous readers (tile it - 1's dQ) were waited for before the staging
                // barrier of tile it - 1. dQ[query half hq] = dS[hq rows, own keys] K_w
                fence_proxy_async();
                named_bar_sync(1 + wg, 128);
#pragma unroll
                for (int hq = 0; hq < 2; hq++) {
#pragma unroll
                    for (int kk = 0; kk < 4; kk++)
                        wgmma_m64n64k16_ss<1, 1>(dq + 32 * hq, wgmma_desc(ds_own(wg, hq) + 2048 * kk), wgmma_desc(sKw + 2048 * kk), kk);
                }
                wgmma_commit();
            } else {
            // both consumers' dS^T rows are in (and visible to the async proxy). Buffer db was
            // last read by tile it - 2's dQ products, which both consumers waited for before
            // they reached this barrier in tile it - 1.
            fence_proxy_async();
            named_bar_sync(3, 256);
            // dQ rows 64 wg .. of the tile = dS K over the 128 keys: A = dS^T's query half wg
            // (stored key-major: MN-major), B = K (key-major: MN-major)
            {
                const uint64_t dsS = wgmma_desc(ds_half(db, wg)), dsKall = wgmma_desc(sK);
#pragma unroll
                for (int kk = 0; kk < 8; kk++)
                    wgmma_m64n64k16_ss<1, 1>(dq, wgmma_desc_at(dsS, 2048 * kk), wgmma_desc_at(dsKall, 2048 * kk), kk);
            }
            wgmma_commit();
            if constexpr (!DK_EARLY) {  // dK += dS^T Q
#pragma unroll
                for (int kk = 0; kk < 8; kk++) wgmma_m64n64k16_rs<1>(dkacc, ads[kk], wgmma_desc_at(dsQ, 2048 * kk));
                wgmma_commit();
            }
            }
        }
        if constexpr (DK_EARLY || INDEP) {
            wgmma_wait<0>();
        } else {
            wgmma_wait<1>();  // dV and dQ done; dK may still run
        }
        reg_fence(dq);
        // dQ -> this consumer's staging buffer (two boxes of 32 columns: element 4j + 2r (+1) is
        // row 16 warp + lane / 4 + 8r, column 8j + 2 (lane % 4) (+1)), once the previous tile's
        // reduce-adds have read it; then one thread adds both boxes to dq_acc
        // (INDEP: two query halves hq, boxes 2 hq + column half, 8 KB each)
        if (t == 0) bulk_wait_read<0>();
        named_bar_sync(1 + wg, 128);
#pragma unroll
        for (int hq = 0; hq < (INDEP ? 2 : 1); hq++) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int js = j ^ jflip;  // the n8 tile stored in this step (same box as j)
                    const float *d = dq + 32 * hq;
                    const float x0 = jflip ? d[4 * (j ^ 2) + 2 * r] : d[4 * j + 2 * r];
                    const float x1 = jflip ? d[4 * (j ^ 2) + 2 * r + 1] : d[4 * j + 2 * r + 1];
                    const uint32_t a = sdq + (2 * hq + js / 4) * (Q128_DQ_BYTES / 2) + row * 128 +
                                       (((2 * (js % 4) + (lane & 3) / 2) ^ (row & 7)) << 4) + (lane & 1) * 8;
                    asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x0), "f"(x1) : "memory");
                }
            }
        }
        fence_proxy_async();
        named_bar_sync(1 + wg, 128);
        if (t == 0) {
            if constexpr (INDEP) {
#pragma unroll
                for (int box = 0; box < 4; box++)
                    tma_reduce_add_4d(&tm_dq, sdq + box * (Q128_DQ_BYTES / 2), 32 * (box & 1), h, q0 + 64 * (box >> 1), b);
            } else {
                tma_reduce_add_4d(&tm_dq, sdq, 0, h, q0 + 64 * wg, b);
                tma_reduce_add_4d(&tm_dq, sdq + Q128_DQ_BYTES / 2, 32, h, q0 + 64 * wg, b);
            }
            bulk_commit();
        }
        wgmma_wait<0>();  // dK done: this thread is through with the stage's Q, dO, lse2, D
        reg_fence(dkacc);
        reg_fence(dvacc);
        mbar_arrive(bar_empty(st));
    }
    if (t == 0) bulk_wait_all();  // the reduce-adds have read the staging buffer (reused below)

    // epilogue: dk * scale, then dv, through the staging buffer (64 rows of 256 bytes, 16-byte
    // chunk c of row r at c ^ (r % 8), stored in the conflict-free order above), written with
    // 16-byte stores (or added to dk / dv when accumulating)
    auto st2 = [](uint32_t a, float x, float y) { asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x), "f"(y) : "memory"); };
    auto ld4 = [](float *x, uint32_t a) {
        asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(x[0]), "=f"(x[1]), "=f"(x[2]), "=f"(x[3]) : "r"(a) : "memory");
    };
    if (kn.rstd) bwd_knorm_rows(dkacc, sKw, kn, key0, warp, lane, b, T, KV, kh);  // dK scaled and normed: mul 1 below
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
        const float *acc = pass == 0 ? dkacc : dvacc;
        const float mul = pass == 0 && !kn.rstd ? SCALE : 1.f;
        const bool add = accumulate && !(pass == 0 && kn.rstd);  // a normed dK overwrites
        __nv_bfloat16 *dst = pass == 0 ? dk : dv;
        named_bar_sync(1 + wg, 128);  // the buffer is free (the reduce-adds / the previous pass read it)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = warp * 16 + lane / 4 + 8 * r;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int jj = j ^ jflip;
                const uint32_t a = row * 256 + (((2 * jj + (lane & 3) / 2) ^ (row & 7)) << 4) + (lane & 1) * 8;
                st2(sdq + a, (jflip ? acc[4 * (j ^ 2) + 2 * r] : acc[4 * j + 2 * r]) * mul,
                    (jflip ? acc[4 * (j ^ 2) + 2 * r + 1] : acc[4 * j + 2 * r + 1]) * mul);
            }
        }
        named_bar_sync(1 + wg, 128);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int rs = t & 7, c = (t >> 3) & 7, row = 8 * ((t >> 6) + 2 * i) + rs, key = key0 + row;
            if (key >= T) continue;
            const size_t off = (((size_t)b * T + key) * KV + kh) * HD + 8 * c;
            float x[8];
            ld4(x, sdq + row * 256 + (((2 * c) ^ rs) << 4));
            ld4(x + 4, sdq + row * 256 + (((2 * c + 1) ^ rs) << 4));
            if (add) {
                float o[8];
                load8(o, dst + off);
#pragma unroll
                for (int e = 0; e < 8; e++) x[e] += o[e];
            }
            store8(dst + off, x);
        }
    }
#else
    __trap();  // built without sm_90a: attention_backward never launches this (sm90_available)
#endif
}

}  // namespace attn

// ----------------------------------------------------------------------------
// kernel launchers

// out (B,T,H,hd) bf16, lse (B,H,T) fp32 <- causal softmax(q k^T / sqrt(hd)) v, GQA h -> h / (H/KV)
// The portable mma.sync kernel (any sm_80+); attention_forward (Hopper section below) picks
// between it and the wgmma kernel.
inline void attention_forward_mma(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                  const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd, cudaStream_t stream) {
    ProfScope prof_(PROF_ATTN_FWD, stream);
    using namespace attn;
    check_forward("attention_forward", out, q, k, v, B, T, H, KV, hd);
    static bool configured = false;  // the kernel needs more than the default 48 KB of shared memory
    if (!configured) {
        cudaCheck(cudaFuncSetAttribute(attention_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, FWD_SMEM));
        configured = true;
    }
    dim3 grid(H, B, ceil_div(T, FWD_BR));
    attention_forward_kernel<<<grid, FWD_THREADS, FWD_SMEM, stream>>>(out, lse, q, k, v, T, H, KV);
    cudaCheckLaunch();
}

// fp32 scratch the backward needs: two dQ accumulators (B,T,H,hd) each (double buffered: a call
// can zero the one the next call will use, AttnBwdPrepared), then D and lse2 (B,H,T) each
inline size_t attention_backward_scratch_floats(int B, int T, int H, int hd) {
    return 2 * (size_t)B * T * H * hd + 2 * (size_t)B * H * T;
}
// dQ accumulator buf (0 or 1) inside the backward's scratch: (B, T, H, hd) fp32, contiguous,
// 16-byte aligned; buffer 0 at the scratch's start, buffer 1 right after it. What is zero when:
// - a backward call adds its dQ into buffer prep.dq_buf, which must be all zero when its kernel
//   starts: the call's preprocess zeroes it, unless prep.dq_zero says it is zero already;
// - with prep.zero_other the call leaves the other buffer (1 - dq_buf) all zero by the time it
//   returns (in stream order), so the next call can use it with dq_zero; without, the call
//   never touches the other buffer.
// After attention_backward(dq = nullptr, ...) buffer dq_buf holds dQ unscaled, until the next
// call that uses or zeroes that buffer: dq = acc * attention_backward_dq_acc_scale(), rounded to
// bf16, is what the backward would have written (attention_backward_dq_kernel: one fp32
// multiply, then round to nearest even). A caller that reads it directly
// (qk_norm_rope_gain_backward_from_acc) saves the convert's pass (4 bytes read + 2 written per
// value) and its own read of the bf16 dq.
inline float *attention_backward_dq_acc(float *scratch, int B, int T, int H, int hd, int buf) {
    return scratch + (size_t)buf * B * T * H * hd;
}
inline float attention_backward_dq_acc_scale() { return attn::SCALE; }
// D = rowsum(dout * out) inside the scratch: (B, H, T) fp32, after both dQ accumulators
inline float *attention_backward_D(float *scratch, int B, int T, int H, int hd) {
    return scratch + 2 * (size_t)B * T * H * hd;
}

// What the caller of attention_backward has already done, so that its preprocess pass need not,
// and which dQ accumulator it uses (attention_backward_dq_acc says what is zero when). The
// default is one buffer: buffer 0, zeroed by the preprocess, buffer 1 never touched. The training
// backward (model_gpu.cuh) alternates the buffers by layer: each call but the last zeroes the next
// layer's (prep.zero_other), so each call but the first skips the zeroing (prep.dq_zero).
struct AttnBwdPrepared {
    bool D = false;           // the scratch's D (attention_backward_D) holds rowsum(dout * out) as the
                              // preprocess sums it (xsa_backward with its D argument writes it so)
    int dq_buf = 0;           // the dQ accumulator this call adds into (0 or 1): the one the dq pass,
                              // or with dq = nullptr the caller, reads afterwards
    bool dq_zero = false;     // buffer dq_buf is all zero already (a previous call's zero_other, or the
                              // caller's memset): the preprocess does not write it (it still writes
                              // lse2, and D unless D is set)
    bool zero_other = false;  // leave buffer 1 - dq_buf all zero for the next call: stages 11..15 of
                              // the Hopper kernel zero it with the producer warp after its loads
                              // (no extra pass), every other path with a cudaMemsetAsync after
                              // its kernel
    // k's per-head RMSNorm + RoPE backward done in the Hopper kernel's epilogue (stages 11..15, where
    // attention_backward_knorm_fits): k_rstd (B, T, KV) fp32, the forward's 1/rms of c_k's output
    // rows; rope_cos / rope_sin (T, 8) fp32, the tables of ROPE_DIMS = 16. Then dk comes out as the
    // gradient of c_k's output (k read as the forward's out, RoPE(xn), no gain) and is overwritten
    // even with accumulate (dv still adds). Null (the default): dk is attention's own gradient.
    const float *k_rstd = nullptr, *rope_cos = nullptr, *rope_sin = nullptr;
};

// The backward's preprocess pass: D, lse2 and dq_acc zeroed (see the kernels; not zeroed with
// prep.dq_zero). version 0: attn_pre_version() (ATTN_PRE_VERSION, or the environment's ATTN_PRE),
// else 1, 2 or 3 (dev/attention.cu runs all three, bit for bit the same results, and times
// them); version 2 needs B*T*H*8 < 2^31, version 3 H a power of two <= 32 (else version 1 runs).
// Version 1 moved its 412 MB at 86% of copy bandwidth, and version 2 (4 rows a thread) ran
// slower, 118.9 us against 112.0 (H200, seed shape, same call, 2026-12-01); without the zeroing
// (below) version 1 ran at ~2.5 TB/s (ncu, in training): one load per tensor in flight, then a
// dependent lse load, and D / lse2 / lse touched one sector per row. Version 3 (the default)
// keeps 8 rows' loads in flight per thread and reads / writes lse, D, lse2 in 32-byte runs.
// Measured (H200, seed shape, dev_attention --bench-only, 2026-12-03), v1 -> v3: with the zeroing
// 110.6 -> 105.1 us (v2 124.2); without ("dqz", the non-XSA layers after the first) 67.0 -> 59.0
// (a plain read of dout and out alone, 16 loads in flight a thread, took 56.2); D prepared and the
// accumulator zero (lse2 alone, the XSA layers after the first) 33.2 -> 6.8; D prepared with the
// zeroing 61.3 -> 60.9.
// With D prepared by the caller (prep.D) the pass runs without reading dout and out: version 3's
// kernel without its dot products where it fits, else version 1's.
// The zeroing is ~200 MB of the pass's ~412 MB at the seed shape. In training (model_gpu.cuh)
// every layer's call but the first gets its accumulator already zero (prep.dq_zero): the
// previous layer's Hopper kernel (stages 11..15) zeroed it with its producer warp
// (prep.zero_other, bwd_zero_share). Measured (H200, seed shape, dev_attention --bench-only,
// 2026-12-03): the pass 109.7 -> 67.2 us (D and lse2 only), and stage 12 with its zeroing
// ("dqz zo", preprocess included) 1440.3 us against 1482.1 without: the kernel absorbs the stores.
// Developer knob: ATTN_PRE=1|2|3 in the environment (read once) picks the version of every call
// that passes version 0; anything else exits 2.
constexpr int ATTN_PRE_VERSION = 3;
inline int attn_pre_version() {
    static const int v = 1 + env_choice("ATTN_PRE", {"1", "2", "3"}, ATTN_PRE_VERSION - 1);
    return v;
}
inline bool attn_pre_v3_fits(int H) { return H >= 1 && H <= 32 && (H & (H - 1)) == 0; }
inline void attention_backward_preprocess_run(float *Dd, float *lse2, float *dq_acc, const __nv_bfloat16 *dout,
                                              const __nv_bfloat16 *out, const float *lse, int B, int T, int H,
                                              cudaStream_t stream, int version = 0, AttnBwdPrepared prep = {}) {
    using namespace attn;
    const size_t rows = (size_t)B * T * H;
    if (rows == 0) return;
    if (prep.dq_zero) dq_acc = nullptr;  // the kernels then leave it alone
    if (version == 0) version = attn_pre_version();
    if (version == 3 && attn_pre_v3_fits(H)) {
        const int h_shift = __builtin_ctz((unsigned)H);
        const dim3 grid(ceil_div(T, PRE3_TILE >> h_shift), B);  // B <= 65535: check_shapes
        if (prep.D)
            attention_backward_preprocess_v3_kernel<false><<<grid, PRE3_THREADS, 0, stream>>>(Dd, lse2, dq_acc, nullptr, out,
                                                                                              lse, T, H, h_shift);
        else
            attention_backward_preprocess_v3_kernel<true><<<grid, PRE3_THREADS, 0, stream>>>(Dd, lse2, dq_acc, dout, out, lse,
                                                                                             T, H, h_shift);
    } else if (prep.D) {
        attention_backward_preprocess_kernel<<<ceil_div(rows * 8, 256), 256, 0, stream>>>(Dd, lse2, dq_acc, nullptr, out,
                                                                                         lse, B, T, H);
    } else if (version == 2 && rows * 8 < (1ull << 31)) {
        attention_backward_preprocess_v2_kernel<<<ceil_div(rows, PRE_ROWS * PRE_STEP), PRE_THREADS, 0, stream>>>(
            Dd, lse2, dq_acc, dout, out, lse, T, H, (int)rows);
    } else {
        attention_backward_preprocess_kernel<<<ceil_div(rows * 8, 256), 256, 0, stream>>>(Dd, lse2, dq_acc, dout, out, lse,
                                                                                         B, T, H);
    }
    cudaCheckLaunch();
}

// shared by both backward launchers: the argument checks and the preprocess pass (D, lse2,
// dq_acc zeroed unless prep.dq_zero), and the last pass dq = bf16(dq_acc * scale) (+ dq) (none
// when dq is null: the caller reads the accumulator, attention_backward_dq_acc). dq_acc: buffer
// prep.dq_buf; dq_other: the other buffer when prep.zero_other (the launcher zeroes it), else null.
inline void attention_backward_preprocess(const char *who, const __nv_bfloat16 *dq, const __nv_bfloat16 *dk,
                                          const __nv_bfloat16 *dv, const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                                          const __nv_bfloat16 *k, const __nv_bfloat16 *v, const __nv_bfloat16 *out,
                                          const float *lse, int B, int T, int H, int KV, int hd, float *scratch,
                                          float **dq_acc, float **dq_other, float **Dd, float **lse2, cudaStream_t stream,
                                          AttnBwdPrepared prep) {
    using namespace attn;
    check_shapes(who, B, T, H, KV, hd);
    const void *ptrs[] = {dq, dk, dv, dout, q, k, v, out, scratch};
    const char *names[] = {"dq", "dk", "dv", "dout", "q", "k", "v", "out", "scratch"};
    for (int i = 0; i < 9; i++) check_aligned(who, ptrs[i], names[i]);
    if (prep.dq_buf != 0 && prep.dq_buf != 1)
        fatal_config("attention.cuh: %s: AttnBwdPrepared::dq_buf = %d, the scratch has dQ accumulators 0 and 1", who,
                     prep.dq_buf);
    *dq_acc = attention_backward_dq_acc(scratch, B, T, H, hd, prep.dq_buf);
    *dq_other = prep.zero_other ? attention_backward_dq_acc(scratch, B, T, H, hd, 1 - prep.dq_buf) : nullptr;
    *Dd = attention_backward_D(scratch, B, T, H, hd);
    *lse2 = *Dd + (size_t)B * H * T;  // 16-byte alignment not needed: read 4 bytes at a time
    attention_backward_preprocess_run(*Dd, *lse2, *dq_acc, dout, out, lse, B, T, H, stream, 0, prep);
}
inline void attention_backward_dq_convert(__nv_bfloat16 *dq, const float *dq_acc, int B, int T, int H, int hd,
                                          bool accumulate, cudaStream_t stream) {
    if (!dq) return;  // the caller takes dQ from the accumulator
    const size_t n8 = (size_t)B * T * H * hd / 8;
    attn::attention_backward_dq_kernel<<<ceil_div(n8, 256), 256, 0, stream>>>(dq, dq_acc, n8, accumulate);
    cudaCheckLaunch();
}
// prep.zero_other where the kernel cannot do it (all but the Hopper stages 11..15): a memset
// after the kernel, correct but not free (the ~200 MB of writes the preprocess would have done)
inline void attention_backward_zero_other(float *dq_other, int B, int T, int H, int hd, cudaStream_t stream) {
    if (dq_other) cudaCheck(cudaMemsetAsync(dq_other, 0, (size_t)B * T * H * hd * sizeof(float), stream));
}

// attention_backward on the portable mma.sync kernel (sm_80 and later)
template <int KEY_WARPS = attn::BWD_KEY_WARPS>
inline void attention_backward_mma(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *dout,
                                   const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                   const __nv_bfloat16 *out, const float *lse, int B, int T, int H, int KV, int hd,
                                   float *scratch, bool accumulate, cudaStream_t stream, AttnBwdPrepared prep = {}) {
    ProfScope prof_(PROF_ATTN_BWD, stream);
    using namespace attn;
    if (prep.k_rstd)
        fatal_config("attention.cuh: attention_backward: the k norm (AttnBwdPrepared::k_rstd) runs only in the Hopper kernel's "
                     "stages 11..15 (attention_backward_knorm_fits)");
    float *dq_acc, *dq_other, *Dd, *lse2;
    attention_backward_preprocess("attention_backward", dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, hd, scratch,
                                  &dq_acc, &dq_other, &Dd, &lse2, stream, prep);
    constexpr int smem = bwd_smem_bytes(KEY_WARPS);
    static bool configured = false;
    if (!configured) {
        cudaCheck(cudaFuncSetAttribute(attention_backward_kernel<KEY_WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       smem));
        configured = true;
    }
    dim3 grid(KV, B, ceil_div(T, 16 * KEY_WARPS));
    attention_backward_kernel<KEY_WARPS><<<grid, KEY_WARPS * 32, smem, stream>>>(dk, dv, dq_acc, dout, q, k, v, lse2, Dd, T,
                                                                                  H, KV, accumulate);
    cudaCheckLaunch();
    attention_backward_zero_other(dq_other, B, T, H, hd, stream);
    attention_backward_dq_convert(dq, dq_acc, B, T, H, hd, accumulate, stream);
}


// ---- Hopper backward (sm_90a): host side (the kernel is above, before the launchers) ----

namespace attn {

// TMA map of a (B, T, heads, 64) bf16 tensor as 4-d (64, heads, T, B), boxes of `rows` tokens of
// one head (64 x 1 x rows x 1 = rows x 128 bytes), 128-byte swizzle; rows past T read as zeros.
// fp32 (the dQ accumulator, for the reduce-add): boxes of 32 columns (128 bytes) x rows, and
// rows past T are not written.
template <typename E>
inline CUtensorMap bwd_tensor_map(const E *p, int B, int T, int heads, int rows) {
    constexpr bool f32 = sizeof(E) == 4;
    const cuuint64_t row_bytes = HD * sizeof(E);
    CUtensorMap m;
    const cuuint64_t dims[4] = {(cuuint64_t)HD, (cuuint64_t)heads, (cuuint64_t)T, (cuuint64_t)B};
    const cuuint64_t strides[3] = {row_bytes, (cuuint64_t)heads * row_bytes, (cuuint64_t)T * heads * row_bytes};
    const cuuint32_t box[4] = {(cuuint32_t)(128 / sizeof(E)), 1, (cuuint32_t)rows, 1};
    const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
    const CUresult r = tensor_map_encoder()(&m, f32 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
                                            const_cast<E *>(p), dims,
                                            strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) fatal_config("attention.cuh: cuTensorMapEncodeTiled failed (%d) for B=%d T=%d heads=%d", (int)r, B, T, heads);
    return m;
}

}  // namespace attn

namespace attn {
// an integer stage from the environment variable `name` (0..max), or `fallback` when unset;
// anything else is a configuration error (exit 2)
inline int stage_from_env(const char *name, int fallback, int max) {
    return env_int(name, 0, max, fallback, "0 = the mma.sync kernel, else a Hopper stage");
}
}  // namespace attn

// The order in which the Hopper backward's CTAs are launched (developer knob: the environment
// variable ATTN_BWD_ORDER, 0 or 1, read once; docs/ATTENTION_KERNELS.md has the measurements):
// 1 (default): grid (key blocks, KV, B): the key blocks of one (b, kv head) are neighbours, so the
//    ~130 CTAs resident at a time cover ~8 (b, kv head) pairs. All key blocks of a pair load the
//    same Q / dO tiles and reduce-add into the same fp32 dQ rows: ~2 MB a pair, which then stays
//    in L2 between them. Key block 0 (the most query tiles) still starts first within a pair.
// 0: grid (KV, B, key blocks): the key block is the slowest index (longest first over the whole
//    grid). The resident CTAs then all belong to different pairs, and the dQ reduce-adds and Q / dO
//    loads go to DRAM: ncu (H200, seed shape, stage 5) read 3.2 TB/s of DRAM traffic with 21% L2
//    hits, ~9x the kernel's compulsory bytes.
inline int attn_bwd_grid_order() {
    static const int order = env_choice("ATTN_BWD_ORDER", {"0", "1"}, 1);
    return order;
}

// attention_backward on the Hopper kernel (same arguments and contract); fails with a clear
// message where sm90_available() is false. stage: 1 (dQ by atomics), 2 (dQ
// by TMA reduce-adds), 3 (2 + warp specialized), 4 (3 + one reduce per tile), 5 (4 + a
// 3-stage ring), 6 (5 + each tile's dQ handed on while the next tile's products run), 7 (6
// + dQ split by columns between the consumers, no hand-on), 8 (7 + conflict-free dQ staging and
// a dK / dV epilogue with 16-byte stores), 9 (8 + each tile's dQ multiplied a tile later, the
// consumers decoupled by mbarriers), 10 (9 + the consumers take turns on the tensor cores), see
// attention_backward_sm90_kernel, 11 (8 with 128-query tiles, attention_backward_sm90_q128_kernel) or
// 12 (11 with the exponentials of P^T under the dP^T product), 13 (11 with dK issued before the
// consumers' barrier), 14 (12 and 13) or 15 (13 with the consumers independent: each reduce-adds
// the dQ of its own 64 keys).
constexpr int ATTN_BWD_SM90_STAGES = 15;
inline void attention_backward_sm90(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *dout,
                                    const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                    const __nv_bfloat16 *out, const float *lse, int B, int T, int H, int KV, int hd,
                                    float *scratch, bool accumulate, cudaStream_t stream, int stage = 1,
                                    AttnBwdPrepared prep = {}) {
    ProfScope prof_(PROF_ATTN_BWD, stream);
    using namespace attn;
    if (!sm90_available())
        fatal_config("attention.cuh: attention_backward_sm90 needs an sm_90 GPU and a GPU_ARCH=90a build");
    float *dq_acc, *dq_other, *Dd, *lse2;
    attention_backward_preprocess("attention_backward_sm90", dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, hd, scratch,
                                  &dq_acc, &dq_other, &Dd, &lse2, stream, prep);
    if (stage < 1 || stage > ATTN_BWD_SM90_STAGES)
        fatal_config("attention.cuh: attention_backward_sm90: stage %d unknown (1..%d)", stage, ATTN_BWD_SM90_STAGES);
    if (prep.k_rstd && (stage < Q128_FIRST || !prep.rope_cos || !prep.rope_sin))
        fatal_config("attention.cuh: attention_backward_sm90: the k norm (AttnBwdPrepared::k_rstd) needs stage 11..15 (got %d) "
                     "and both RoPE tables (attention_backward_knorm_fits)", stage);
    // stage s runs kernels[s - 1] (s <= 10) or kernels_q128[s - 11] (they also zero prep.zero_other's
    // buffer) with smem[s - 1] bytes (stages 3+: 384 threads, warp specialized)
    static void (*const kernels[Q128_FIRST - 1])(CUtensorMap, CUtensorMap, CUtensorMap, CUtensorMap, CUtensorMap, __nv_bfloat16 *,
                                    __nv_bfloat16 *, float *, const float *, const float *, int, int, int, bool, bool) = {
        attention_backward_sm90_kernel<1>, attention_backward_sm90_kernel<2>, attention_backward_sm90_kernel<3>,
        attention_backward_sm90_kernel<4>, attention_backward_sm90_kernel<5>, attention_backward_sm90_kernel<6>,
        attention_backward_sm90_kernel<7>, attention_backward_sm90_kernel<8>, attention_backward_sm90_kernel<9>,
        attention_backward_sm90_kernel<10>};
    static void (*const kernels_q128[ATTN_BWD_SM90_STAGES - Q128_FIRST + 1])(
        CUtensorMap, CUtensorMap, CUtensorMap, CUtensorMap, CUtensorMap, __nv_bfloat16 *, __nv_bfloat16 *, float *, const float *,
        const float *, int, int, int, bool, bool, float4 *, size_t, BwdKNorm) = {
        attention_backward_sm90_q128_kernel<false, false>, attention_backward_sm90_q128_kernel<true, false>,
        attention_backward_sm90_q128_kernel<false, true>, attention_backward_sm90_q128_kernel<true, true>,
        attention_backward_sm90_q128_kernel<false, true, true>};
    static const int smem[ATTN_BWD_SM90_STAGES] = {H_SMEM,  H_SMEM2, H_SMEM2, H_SMEM2, H_SMEM5,  H_SMEM5,
                                                   H_SMEM5, H_SMEM5, H_SMEM9, H_SMEM9, Q128_SMEM, Q128_SMEM,
                                                   Q128_SMEM, Q128_SMEM, Q128_SMEM};
    static bool configured = false;
    if (!configured) {
        for (int i = 0; i < ATTN_BWD_SM90_STAGES; i++)
            cudaCheck(cudaFuncSetAttribute(
                i < Q128_FIRST - 1 ? (const void *)kernels[i] : (const void *)kernels_q128[i - Q128_FIRST + 1],
                cudaFuncAttributeMaxDynamicSharedMemorySize, smem[i]));
        configured = true;
    }
    const int q_rows = stage >= Q128_FIRST ? Q128_BR : H_BR;  // query rows per tile
    const CUtensorMap tq = bwd_tensor_map(q, B, T, H, q_rows), tdo = bwd_tensor_map(dout, B, T, H, q_rows);
    const CUtensorMap tk = bwd_tensor_map(k, B, T, KV, H_BC), tv = bwd_tensor_map(v, B, T, KV, H_BC);
    const CUtensorMap tdq = bwd_tensor_map(dq_acc, B, T, H, H_BR);
    const bool kb_fastest = attn_bwd_grid_order() == 1;
    const dim3 grid = kb_fastest ? dim3(ceil_div(T, H_BC), KV, B) : dim3(KV, B, ceil_div(T, H_BC));
    if (stage >= Q128_FIRST) {
        const size_t zero_n4 = dq_other ? (size_t)B * T * H * hd / 4 : 0;
        kernels_q128[stage - Q128_FIRST]<<<grid, H_THREADS_WS, smem[stage - 1], stream>>>(
            tq, tdo, tk, tv, tdq, dk, dv, dq_acc, lse2, Dd, T, H, KV, accumulate, kb_fastest,
            reinterpret_cast<float4 *>(dq_other), zero_n4, BwdKNorm{prep.k_rstd, prep.rope_cos, prep.rope_sin});
        cudaCheckLaunch();
    } else {
        kernels[stage - 1]<<<grid, stage >= 3 ? H_THREADS_WS : H_THREADS, smem[stage - 1], stream>>>(
            tq, tdo, tk, tv, tdq, dk, dv, dq_acc, lse2, Dd, T, H, KV, accumulate, kb_fastest);
        cudaCheckLaunch();
        attention_backward_zero_other(dq_other, B, T, H, hd, stream);
    }
    attention_backward_dq_convert(dq, dq_acc, B, T, H, hd, accumulate, stream);
}

// The Hopper stage attention_backward runs (12, the measured fastest: 353 TFLOP/s against stage
// 8's 330 in one call, and -6.5 ms a training step; stages 11, 13, 14, 15 ran 328, 322, 334, 309;
// before them stage 8 led (325 against stage 7's 313; stages 9 and 10 ran 277 and 288; with the
// old grid order stage 5 led), docs/ATTENTION_KERNELS.md. 0 keeps the mma.sync kernel on Hopper
// too). Developer knob, to measure stages in one process: the environment variable
// ATTN_BWD_STAGE (0..ATTN_BWD_SM90_STAGES) overrides it, read once.
constexpr int ATTN_BWD_SM90_STAGE = 12;


inline int attn_bwd_stage() {
    static const int stage = attn::stage_from_env("ATTN_BWD_STAGE", ATTN_BWD_SM90_STAGE, ATTN_BWD_SM90_STAGES);
    return stage;
}

// Whether attention_backward, as it runs here (its stage, this GPU), takes k's norm backward into
// its epilogue (AttnBwdPrepared::k_rstd): the Hopper kernel's stages 11..15 with head_dim 64 and
// ROPE_DIMS (rd) 16. Elsewhere the caller runs the q/k backward on dk itself.
inline bool attention_backward_knorm_fits(int hd, int rd) {
    return hd == attn::HD && rd == attn::KNORM_RD && attn_bwd_stage() >= attn::Q128_FIRST && sm90_available();
}

// dq, dk, dv <- gradients of attention_forward given dout, its inputs, its out and lse.
// accumulate = false overwrites dq/dk/dv; true adds to them (the CPU twin always adds), e.g.
// onto the dv that xsa_backward wrote. scratch: attention_backward_scratch_floats(...) floats,
// 16-byte aligned. dq is non-deterministic in its last bits (fp32 atomics, see the top).
// dq = nullptr: no dq pass; dQ stays in the scratch's fp32 accumulator prep.dq_buf, unscaled
// (attention_backward_dq_acc / _scale), until the next backward call that uses or zeroes that
// buffer, and accumulate applies to dk and dv only (the kernels never read dq: only the last
// pass adds to it).
// prep: what the caller did already of the preprocess's work, and the dQ accumulators'
// double buffering (AttnBwdPrepared; default: buffer 0, zeroed here, buffer 1 left alone).
// Accumulator prep.dq_buf must be all zero at the kernel: the preprocess zeroes it unless
// prep.dq_zero (then the caller vouches for it); prep.zero_other: the other buffer is all zero
// when the call is done (in stream order), for the next call's dq_zero.
// Runs the Hopper kernel (stage attn_bwd_stage()) where it can (sm90_available),
// else the mma.sync one.
inline void attention_backward(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *dout,
                               const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                               const __nv_bfloat16 *out, const float *lse, int B, int T, int H, int KV, int hd,
                               float *scratch, bool accumulate, cudaStream_t stream, AttnBwdPrepared prep = {}) {
    if (attn_bwd_stage() > 0 && sm90_available())
        attention_backward_sm90(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, hd, scratch, accumulate, stream,
                                attn_bwd_stage(), prep);
    else
        attention_backward_mma(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, hd, scratch, accumulate, stream, prep);
}

// out (N,H,hd) bf16 = y - (y . vn) vn, vn = v / max(|v|, 1e-12) (v (N,KV,hd)); vnorm (N,KV) fp32 = |v|
inline void xsa_forward(__nv_bfloat16 *out, float *vnorm, const __nv_bfloat16 *y, const __nv_bfloat16 *v, int N, int H,
                        int KV, int hd, cudaStream_t stream) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    using namespace attn;
    check_shapes("xsa_forward", 1, N, H, KV, hd);
    check_aligned("xsa_forward", out, "out");
    check_aligned("xsa_forward", y, "y");
    check_aligned("xsa_forward", v, "v");
    const size_t threads = (size_t)N * KV * 8;
    xsa_forward_kernel<<<ceil_div(threads, 256), 256, 0, stream>>>(out, vnorm, y, v, N, H, KV);
    cudaCheckLaunch();
}

// dy (N,H,hd), dv (N,KV,hd) <- gradients of xsa_forward given dout; accumulate = true adds to
// them (as the CPU twin does), false overwrites. D (B, H, T = N / B) fp32, unless null: with y
// attention's output, the attention backward's D = rowsum(dy * y) (as its preprocess pass would
// compute it from the dy stored, bit for bit: pass it on with AttnBwdPrepared::D); T: the
// sequence length (N = B T). version 0: xsa_bwd_version() (XSA_BWD_VERSION, or the environment's
// XSA_BWD), else 1 or 2, the same results bit for bit (dev/attention.cu checks and times both);
// version 2 needs H / KV in {1, 2, 4, 8}, KV a power of two <= 32 and N H hd < 2^31 (else
// version 1 runs). Developer knob: XSA_BWD=1|2 (read once); anything else exits 2.
constexpr int XSA_BWD_VERSION = 2;
inline int xsa_bwd_version() {
    static const int v = 1 + env_choice("XSA_BWD", {"1", "2"}, XSA_BWD_VERSION - 1);
    return v;
}
inline bool xsa_bwd_v2_fits(int N, int H, int KV) {
    const int G = H / KV;
    return (G == 1 || G == 2 || G == 4 || G == 8) && KV <= 32 && (KV & (KV - 1)) == 0 &&
           (size_t)N * H * attn::HD < (1ull << 31);
}
inline void xsa_backward(__nv_bfloat16 *dy, __nv_bfloat16 *dv, const __nv_bfloat16 *dout, const __nv_bfloat16 *y,
                         const __nv_bfloat16 *v, const float *vnorm, int N, int H, int KV, int hd, bool accumulate,
                         cudaStream_t stream, float *D = nullptr, int T = 0, int version = 0) {
    ProfScope prof_(PROF_MEMBOUND, stream);
    using namespace attn;
    check_shapes("xsa_backward", 1, N, H, KV, hd);
    const void *ptrs[] = {dy, dv, dout, y, v};
    const char *names[] = {"dy", "dv", "dout", "y", "v"};
    for (int i = 0; i < 5; i++) check_aligned("xsa_backward", ptrs[i], names[i]);
    const size_t threads = (size_t)N * KV * 8;
#ifdef BREAK_XSA_ACCUMULATE  // a deliberately wrong variant (dev/broken_variants.sh): always overwrites
    accumulate = false;
#endif
    if (D && (T < 1 || N % T != 0)) fatal_config("attention.cuh: xsa_backward: D needs T dividing N (T=%d N=%d)", T, N);
    if (version == 0) version = xsa_bwd_version();
    if (version == 2 && xsa_bwd_v2_fits(N, H, KV)) {
        const int kv_shift = __builtin_ctz((unsigned)KV), blocks = ceil_div(N, XSA2_PAIRS >> kv_shift);
        auto launch = [&](auto kernel) {
            kernel<<<blocks, XSA2_THREADS, 0, stream>>>(dy, dv, dout, y, v, vnorm, N, kv_shift, accumulate, D, D ? T : 1);
        };
        switch (H / KV) {
        case 1: launch(xsa_backward_v2_kernel<1>); break;
        case 2: launch(xsa_backward_v2_kernel<2>); break;
        case 4: launch(xsa_backward_v2_kernel<4>); break;
        default: launch(xsa_backward_v2_kernel<8>); break;
        }
    } else {
        xsa_backward_kernel<<<ceil_div(threads, 256), 256, 0, stream>>>(dy, dv, dout, y, v, vnorm, N, H, KV, accumulate, D,
                                                                         D ? T : 1);
    }
    cudaCheckLaunch();
}

// ============================================================================
// Hopper path (sm_90a): wgmma + TMA
//
// The same forward (same layouts, same out/lse contract, so the backward above works with it)
// on Hopper's own machinery:
// - TMA (cp.async.bulk.tensor): one thread asks the copy engine for a whole 2-D box of rows
//   (q, k or v of one head, described once on the host by a tensor map); the engine writes it
//   to shared memory already in the 128-byte swizzle that wgmma reads, zero-fills rows past
//   the end of the sequence, and signals an mbarrier with the byte count when it lands. No
//   thread spends instructions on address arithmetic or cp.async.
// - wgmma (warpgroup MMA): the 4 warps of a warpgroup issue one 64 x N x 16 product together,
//   reading both operands straight from shared memory (S = Q K^T) or A from registers
//   (O += P V, with P the softmax probabilities still in registers). It is asynchronous: the
//   tensor cores run it while the warps issue more instructions, and wgmma.wait_group fences it.
// Stage S1 (attention_forward_sm90_kernel): a CTA owns 128 query rows of one (b, h) and has 2 warpgroups, 64 rows
// each; K/V stream through a 2-stage ring of 64-key tiles, loaded by TMA one tile ahead;
// __syncthreads frees a stage (every warpgroup has waited for its wgmmas on it). The online
// softmax, the causal mask and the epilogue are the mma.sync kernel's helpers: the wgmma
// accumulator of a 64 x 64 product gives each warp a 16 x 64 slice in exactly the mma.sync
// m16n8 fragment layout, and two n8 tiles of S are the A fragment of P for the next product.
// Stage S2 (attention_forward_sm90_ws_kernel<false, 64>): the same per-tile work, warp-
// specialized (a producer warpgroup issues the loads into a 4-stage ring guarded by full/empty
// mbarriers; 3 consumer warpgroups compute; no CTA-wide barrier in the loop); its variants
// <true, 64> and <true, 128> overlap each consumer's products with its softmax. The
// stages and what each buys: docs/ATTENTION_KERNELS.md.
//
// Shared memory layout (the TMA 128-byte swizzle = this file's swz(): 16-byte chunk c of row r
// is stored at chunk c ^ (r % 8), given a 1024-byte-aligned tile of 128-byte rows):
//   S1: [Q 128 rows][K stage 0, 1: 64 rows each][V stage 0, 1][3 mbarriers: Q, KV stage 0, 1]
//   S2: [Q 192 rows][K stages 0..3][V stages 0..3][mbarriers: Q, full 0..3, empty 0..3]
//       (K/V stages of 64 or 128 rows)
// wgmma smem descriptor (64 bits): start address >> 4 (bits 0-13), leading byte offset >> 4
// (16-29, unused for these layouts), stride byte offset >> 4 (32-45: 1024 = the distance from
// one 8-row swizzle group to the next), layout 1 = 128-byte swizzle (bits 62-63). Base offset
// (49-51) stays 0 because every tile starts on the swizzle's 1024-byte period.
//   Q, K are "K-major" (head_dim contiguous): the k-step of 16 columns = 32 bytes is added to
//   the start address (the hardware applies the swizzle to the final address).
//   V is [key][d], i.e. the B operand of P V is "MN-major": transposed (imm-trans-b = 1); a
//   k-step of 16 keys is 16 rows = 2048 bytes further; 64 columns = exactly one swizzle atom.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ATTN_SM90 1  // device code of an sm_90a build: wgmma, TMA and mbarriers exist
#endif

namespace attn {


// ---- shared by the S1 and S2 kernels ------------------------------------------
constexpr int H90_BC = 64;                        // keys per K/V tile
constexpr int H90_KV_BYTES = H90_BC * ROW_BYTES;  // one TMA box of k (or v)
static_assert(H90_BC == 64 && H90_KV_BYTES % 1024 == 0, "the wgmma helpers are m64n64k16; tiles are 1024-byte aligned");

#ifdef ATTN_SM90
// The pieces of one K/V tile's work for one warpgroup (64 query rows, Q at sQw); o, m, l, s:
// this warp's 16 rows in the mma.sync layout; wrow0: the warp's first query row.
// BC: keys per tile (64 or 128); S holds BC/8 n8 tiles per warp, P BC/16 A fragments.
// S = Q K^T (both from shared memory), one committed wgmma group; the caller fences before.
template <int BC>
__device__ __forceinline__ void h90_issue_qk(float (&sacc)[BC / 2], uint32_t sQw, uint32_t sK) {
    const uint64_t dq = wgmma_desc(sQw), dk = wgmma_desc(sK);
#pragma unroll
    for (int kk = 0; kk < KCHUNKS; kk++) {
        if constexpr (BC == 64) wgmma_m64n64k16_ss<0, 0>(sacc, wgmma_desc_at(dq, kk * 32), wgmma_desc_at(dk, kk * 32), kk > 0);
        else wgmma_m64n128k16_ss(sacc, wgmma_desc_at(dq, kk * 32), wgmma_desc_at(dk, kk * 32), kk > 0);
    }
    wgmma_commit();
}
// O += P V (P from registers: it must stay untouched until the group is waited for)
template <int BC>
__device__ __forceinline__ void h90_issue_pv(float (&oacc)[32], const uint32_t (&p)[BC / 16][4], uint32_t sV) {
    const uint64_t dv = wgmma_desc(sV);
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) wgmma_m64n64k16_rs<1>(oacc, p[kk], wgmma_desc_at(dv, kk * 16 * ROW_BYTES));
    wgmma_commit();
}
// causal/end mask where the tile crosses the warp's rows, then the online softmax without the
// rescaling of o (its factors in alpha)
template <int BC, int POLY_EVERY = 0>
__device__ __forceinline__ void h90_softmax(float (&s)[1][BC / 8][4], float (&m)[1][2], float (&l)[1][2],
                                            float (&alpha)[1][2], int wrow0, int col0, int T, int lane) {
#ifdef BREAK_WGMMA_FWD  // a deliberately wrong variant (dev/broken_variants.sh): the diagonal tiles go unmasked
    (void)T;
#else
    if (col0 + BC - 1 > wrow0) fwd_mask<1, BC / 8>(s, wrow0, col0, T, lane);
#endif
    fwd_softmax_p<1, BC / 8, POLY_EVERY>(s, m, l, alpha);
}
template <int BC>
__device__ __forceinline__ void h90_to_p(uint32_t (&p)[BC / 16][4], float (&s)[1][BC / 8][4]) {
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) c_to_a(p[kk], s[0][2 * kk], s[0][2 * kk + 1]);
}
// keep the compiler from reusing P's registers while a wgmma still reads them
template <int BC>
__device__ __forceinline__ void h90_fence_p(uint32_t (&p)[BC / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++) asm volatile("" : "+r"(p[kk][i])::"memory");
}

// One K/V tile, start to finish (S1, S2): returns with every wgmma on sK/sV complete, so the
// stage can be reused.
__device__ __forceinline__ void h90_tile(float (&o)[1][DTILES][4], float (&m)[1][2], float (&l)[1][2], uint32_t sQw,
                                         uint32_t sK, uint32_t sV, int wrow0, int col0, int T, int lane) {
    float s[1][8][4], alpha[1][2];
    uint32_t p[H90_BC / 16][4];
    float(&sacc)[32] = *reinterpret_cast<float(*)[32]>(&s[0][0][0]);
    float(&oacc)[32] = *reinterpret_cast<float(*)[32]>(&o[0][0][0]);
    wgmma_fence();
    h90_issue_qk<H90_BC>(sacc, sQw, sK);
    wgmma_wait<0>();
    reg_fence(sacc);
    h90_softmax<H90_BC>(s, m, l, alpha, wrow0, col0, T, lane);
    fwd_rescale<1>(o, alpha);
    h90_to_p<H90_BC>(p, s);
    reg_fence(oacc);
    wgmma_fence();
    h90_issue_pv<H90_BC>(oacc, p, sV);
    wgmma_wait<0>();
    reg_fence(oacc);
    h90_fence_p<H90_BC>(p);
}

// epilogue (as the mma.sync kernel's): O / l as bf16, lse = m * scale + ln(l), rows < T only
__device__ __forceinline__ void h90_store(__nv_bfloat16 *__restrict__ out, float *__restrict__ lse,
                                          const float (&o)[1][DTILES][4], const float (&m)[1][2], const float (&l)[1][2],
                                          int wrow0, int b, int h, int T, int H, int lane) {
    if (wrow0 >= T) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lt = l[0][r];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        const int row = wrow0 + (lane >> 2) + r * 8;
        if (row >= T) continue;
        const float inv = lt > 0.f ? 1.f / lt : 0.f;
        __nv_bfloat16 *orow = out + (((size_t)b * T + row) * H + h) * HD + (lane & 3) * 2;
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++)
            *reinterpret_cast<__nv_bfloat162 *>(orow + dt * 8) = __floats2bfloat162_rn(o[0][dt][2 * r] * inv, o[0][dt][2 * r + 1] * inv);
        if ((lane & 3) == 0)
            lse[((size_t)b * H + h) * T + row] = lt > 0.f ? (m[0][r] * (SCALE * LOG2E) + fast_log2(lt)) * LN2 : -INFINITY;
    }
}

// Where a CTA works: query head h of sequence b, query rows from q0 (the grid's z index is
// reversed so the longest causal tiles start first), KV head kh; smem: the dynamic shared
// memory rounded up to the 1024-byte period of the swizzle (the launch adds 1024 bytes for it).
// z counts back from the sequence's last query tile, not from gridDim.z: a grid with fewer z
// blocks than ceil(T / rows_per_cta) computes only the last ones (attention_forward's q_from).
struct H90Cta {
    int h, b, kh, q0;
    uint32_t smem;
};
__device__ __forceinline__ H90Cta h90_cta(int rows_per_cta, int T, int H, int KV) {
    extern __shared__ __align__(1024) unsigned char smem_h90[];
    H90Cta c;
    c.h = blockIdx.x;
    c.b = blockIdx.y;
    c.kh = c.h / (H / KV);
#ifdef BREAK_Q_FROM  // a deliberately wrong variant (dev/broken_variants.sh): z counted back from gridDim.z again
    c.q0 = (gridDim.z - 1 - blockIdx.z) * rows_per_cta;
#else
    c.q0 = ((T + rows_per_cta - 1) / rows_per_cta - 1 - (int)blockIdx.z) * rows_per_cta;
#endif
    c.smem = (smem_u32(smem_h90) + 1023) & ~1023u;
    return c;
}

__device__ __forceinline__ void h90_init(float (&o)[1][DTILES][4], float (&m)[1][2], float (&l)[1][2]) {
#pragma unroll
    for (int dt = 0; dt < DTILES; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[0][dt][e] = 0.f;
    m[0][0] = m[0][1] = -INFINITY;
    l[0][0] = l[0][1] = 0.f;
}
#endif  // ATTN_SM90

// ---- S1: every warpgroup computes; thread 0 also issues the loads ---------------
constexpr int H90_BR = 128;                    // query rows per CTA
constexpr int H90_WGS = H90_BR / 64;           // warpgroups, 64 rows each
constexpr int H90_THREADS = 128 * H90_WGS;
constexpr int H90_Q_BYTES = H90_BR * ROW_BYTES;   // one TMA box of q
// + 1024 so the tiles can be aligned to the swizzle's 1024-byte period, + the 3 mbarriers
constexpr int H90_SMEM = 1024 + H90_Q_BYTES + 4 * H90_KV_BYTES + 3 * 8;
static_assert(H90_BR % 64 == 0 && H90_Q_BYTES % 1024 == 0, "whole warpgroups; tiles are 1024-byte aligned");

// grid (H, B, ceil(T / H90_BR)), the z index reversed (longest query tiles first). tq, tk, tv:
// 4-D tensor maps over (d, head, t, b) of q, k, v with boxes of (64, 1, H90_BR or H90_BC, 1).
__global__ void __launch_bounds__(H90_THREADS, 2)
    attention_forward_sm90_kernel(__nv_bfloat16 *__restrict__ out, float *__restrict__ lse,
                                  const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                                  const __grid_constant__ CUtensorMap tv, int T, int H, int KV, int B) {
#ifdef ATTN_SM90
    // wg through a shuffle: warp-uniform to ptxas (see attention_forward_sm90_ws_kernel)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    const H90Cta c = h90_cta(H90_BR, T, H, KV);
    const int h = c.h, b = c.b, kh = c.kh, q0 = c.q0;
    const uint32_t sQ = c.smem;
    const uint32_t sK0 = sQ + H90_Q_BYTES, sV0 = sK0 + 2 * H90_KV_BYTES;
    const uint32_t barQ = sV0 + 2 * H90_KV_BYTES, barKV0 = barQ + 8;  // stage s: barKV0 + 8 s

    // key tiles 0..n_tiles-1 reach the last valid query row; walk them from the diagonal down
    const int q_last = min(T, q0 + H90_BR) - 1;
    const int n_tiles = q_last / H90_BC + 1;

    if (tid == 0) {
        mbar_init(barQ, 1);
        mbar_init(barKV0, 1);
        mbar_init(barKV0 + 8, 1);
        mbar_init_fence();
        mbar_arrive_expect_tx(barQ, H90_Q_BYTES);
        tma_load_4d(sQ, &tq, barQ, 0, h, q0, b);
        mbar_arrive_expect_tx(barKV0, 2 * H90_KV_BYTES);
        tma_load_4d(sK0, &tk, barKV0, 0, kh, (n_tiles - 1) * H90_BC, b);
        tma_load_4d(sV0, &tv, barKV0, 0, kh, (n_tiles - 1) * H90_BC, b);
    }
    __syncthreads();  // the barriers are initialized before anyone waits on them

    const int wg_row0 = q0 + wg * 64;              // this warpgroup's first query row
    const int wrow0 = wg_row0 + (warp % 4) * 16;   // this warp's first query row
    const uint32_t sQw = sQ + wg * 64 * ROW_BYTES;  // this warpgroup's 64 rows of Q
    float o[1][DTILES][4], m[1][2], l[1][2];
    h90_init(o, m, l);

    mbar_wait(barQ, 0);
    for (int it = 0; it < n_tiles; it++) {
        const int kt = n_tiles - 1 - it, col0 = kt * H90_BC;
        const int stage = it & 1;
        // every warpgroup is done with tile it-1 (its wgmmas were waited for), so its stage can
        // be refilled with tile it+1 while tile it is used
        if (it > 0) __syncthreads();
        if (tid == 0 && kt > 0) {
            const uint32_t bar = barKV0 + 8 * (stage ^ 1);
            mbar_arrive_expect_tx(bar, 2 * H90_KV_BYTES);
            tma_load_4d(sK0 + (stage ^ 1) * H90_KV_BYTES, &tk, bar, 0, kh, col0 - H90_BC, b);
            tma_load_4d(sV0 + (stage ^ 1) * H90_KV_BYTES, &tv, bar, 0, kh, col0 - H90_BC, b);
        }
        // stage s is filled at iterations s, s + 2, ...: this is its (it / 2)-th phase
        mbar_wait(barKV0 + 8 * stage, (it >> 1) & 1);
        // warpgroup-uniform skip (wgmma needs all 4 warps): no rows in the sequence, or every
        // key of the tile lies above the diagonal for all 64 rows
        if (wg_row0 >= T || col0 > wg_row0 + 63) continue;
        h90_tile(o, m, l, sQw, sK0 + stage * H90_KV_BYTES, sV0 + stage * H90_KV_BYTES, wrow0, col0, T, lane);
    }
    h90_store(out, lse, o, m, l, wrow0, b, h, T, H, lane);
#endif  // ATTN_SM90
}

// ---- S2: warp specialization -----------------------------------------------------
// Warpgroup 0 is the producer: one of its threads issues every TMA load (Q once, then K/V
// tiles into a ring of WS_STAGES stages, as far ahead as the ring allows) and the rest of it
// idles. Warpgroups 1..3 are consumers, 64 query rows each (192 per CTA). Each stage has two
// mbarriers: "full" (the TMA bytes landed; the consumers wait on it) and "empty" (every
// consumer warp is done with it; the producer waits on it before refilling). No CTA-wide
// barrier remains in the loop, and the loads run up to WS_STAGES - 1 tiles ahead.
// (No setmaxnreg: at 512 threads and 1 CTA per SM each thread may use 128 registers, which
// the consumers fit in; giving the producer's share to the consumers is the next step.)
// PIPELINED = true is stage S3's first half: inside each consumer warpgroup the P V product
// of tile j runs on the tensor cores while S = Q K^T of tile j+1 is issued and its softmax
// computed; o is rescaled only after that product has landed (fwd_softmax_p + fwd_rescale).
// The wgmma groups complete in commit order, so S(j+1) is committed before P V(j):
// wait_group 1 then means "S is ready, P V may still run".
// BC = 128 (with PIPELINED) is v5: 128-key tiles, the registers for them taken from the
// producer with setmaxnreg (stage 4 of attention_forward_wgmma).
// PINGPONG (stages 5..7, v6..v8; FA3's warp-scheduler barriers): the consumers take turns
// issuing their products, so the tensor cores run one warpgroup's S and P V while the others
// compute their softmax, instead of all three issuing at once and then all three waiting on
// exp2 together. Consumer cw's turn starts when named barrier 1 + cw completes (its 128 threads
// sync, the previous consumer's 128 arrive) and ends with its arrival on the next consumer's.
// Each consumer takes exactly n_tiles + 1 turns (one per tile, empty for tiles it skips, plus
// the last P V), so no warpgroup ever waits for one that has finished; consumer 0 arrives on
// its own barrier to start, and the last consumer's last turn passes nothing on.
// SKIP_RESCALE: o is rescaled only when the running max of one of the warp's rows moved (alpha
// is exactly 1 otherwise); walking the keys from the diagonal down, most tiles leave it.
// POLY_EVERY: every POLY_EVERY-th n8 tile of scores takes its exp2 on the FMA pipe (exp2_poly).
constexpr int WS_CONSUMERS = 3;
constexpr int WS_BR = 64 * WS_CONSUMERS;
constexpr int WS_THREADS = 128 * (1 + WS_CONSUMERS);
constexpr int WS_STAGES = 4;
constexpr int WS_Q_BYTES = WS_BR * ROW_BYTES;
constexpr int ws_smem(int bc) { return 1024 + WS_Q_BYTES + 2 * WS_STAGES * bc * ROW_BYTES + (1 + 2 * WS_STAGES) * 8; }
static_assert(WS_Q_BYTES % 1024 == 0, "tiles are 1024-byte aligned");

#ifdef ATTN_SM90
// The pipelined consumer loop of one warpgroup over one work tile's n_tiles K/V tiles (S2's
// stages 3..7 and the persistent stage 8): o, m, l start at h90_init's values and end with
// the tile's results. g0: the ring's tile counter at the work tile's start (stage = counter %
// WS_STAGES, phase = counter / WS_STAGES); last_work: no work tile follows (PINGPONG's last
// turn); q_empty: an mbarrier to arrive on (once per warp) when Q is no longer read, 0: none.
template <int BC, bool PINGPONG, bool SKIP_RESCALE, int POLY_EVERY>
__device__ __forceinline__ void ws_consume(float (&o)[1][DTILES][4], float (&m)[1][2], float (&l)[1][2], uint32_t sQw,
                                           uint32_t sK0, uint32_t sV0, uint32_t full0, uint32_t empty0, int g0, int n_tiles,
                                           int wg_row0, int wrow0, int T, int cw, int lane, bool last_work, uint32_t q_empty) {
    constexpr int KV_BYTES = BC * ROW_BYTES;
    float s[1][BC / 8][4], alpha[1][2];
    uint32_t p[BC / 16][4];
    float(&sacc)[BC / 2] = *reinterpret_cast<float(*)[BC / 2]>(&s[0][0][0]);
    float(&oacc)[32] = *reinterpret_cast<float(*)[32]>(&o[0][0][0]);
    // a stage is released once per tile by every consumer warp (skipped tiles included, so
    // the producer's count always completes), after the warp's wgmmas on it are complete
    auto release = [&](int st) {
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + 8 * st);
    };
    auto release_q = [&] {
        __syncwarp();
        if (q_empty && lane == 0) mbar_arrive(q_empty);
    };
    // PINGPONG's turns (see above; no-ops otherwise)
    auto turn_begin = [&] {
        if constexpr (PINGPONG) named_bar_sync(1 + cw, 256);
    };
    auto turn_end = [&](bool last) {
        if constexpr (PINGPONG)
            if (!(last && last_work) || cw != WS_CONSUMERS - 1) named_bar_arrive(1 + (cw + 1) % WS_CONSUMERS, 256);
    };
    // tiles above the diagonal come first in the walk: release them unused
    int it = 0;
    for (; it < n_tiles; it++) {
        const int st = (g0 + it) % WS_STAGES, col0 = (n_tiles - 1 - it) * BC;
        mbar_wait(full0 + 8 * st, ((g0 + it) / WS_STAGES) & 1);
        if (!(wg_row0 >= T || col0 > wg_row0 + 63)) break;
        turn_begin();
        turn_end(false);
        release(st);
    }
    if (it < n_tiles) {
        // the first tile that counts (its stage's full barrier already waited for): S and
        // softmax only; its P V product is issued with the next tile's S
        int pend = (g0 + it) % WS_STAGES;  // the stage whose P V product is in flight or next (p holds its P)
        turn_begin();
        wgmma_fence();
        h90_issue_qk<BC>(sacc, sQw, sK0 + pend * KV_BYTES);
        turn_end(false);
        wgmma_wait<0>();
        reg_fence(sacc);
        h90_softmax<BC, POLY_EVERY>(s, m, l, alpha, wrow0, (n_tiles - 1 - it) * BC, T, lane);
        h90_to_p<BC>(p, s);  // o is still 0: nothing to rescale
        for (it++; it < n_tiles; it++) {
            const int st = (g0 + it) % WS_STAGES, col0 = (n_tiles - 1 - it) * BC;
            mbar_wait(full0 + 8 * st, ((g0 + it) / WS_STAGES) & 1);
            turn_begin();
            wgmma_fence();  // o, p were written since the last wgmma
            h90_issue_qk<BC>(sacc, sQw, sK0 + st * KV_BYTES);
            h90_issue_pv<BC>(oacc, p, sV0 + pend * KV_BYTES);
            turn_end(false);
            wgmma_wait<1>();  // S is ready; P V may still run
            reg_fence(sacc);
            h90_softmax<BC, POLY_EVERY>(s, m, l, alpha, wrow0, col0, T, lane);
            wgmma_wait<0>();
            reg_fence(oacc);
            h90_fence_p<BC>(p);
            release(pend);
            // alpha is exactly 1 for a row whose max did not move (2^(m*c - m*c) = 2^0)
            if (!SKIP_RESCALE || __any_sync(0xffffffffu, alpha[0][0] != 1.f || alpha[0][1] != 1.f))
                fwd_rescale<1>(o, alpha);
            h90_to_p<BC>(p, s);
            pend = st;
        }
        reg_fence(oacc);
        release_q();  // every S = Q K^T of this work tile is complete
        turn_begin();
        wgmma_fence();
        h90_issue_pv<BC>(oacc, p, sV0 + pend * KV_BYTES);
        turn_end(true);
        wgmma_wait<0>();
        reg_fence(oacc);
        h90_fence_p<BC>(p);
        release(pend);
    } else {  // every tile skipped: the last turn, empty
        release_q();
        turn_begin();
        turn_end(true);
    }
}
#endif  // ATTN_SM90

// grid (H, B, ceil(T / WS_BR)), z reversed; tensor maps as for S1 (q boxes of WS_BR rows)
template <bool PIPELINED, int BC, bool PINGPONG = false, bool SKIP_RESCALE = false, int POLY_EVERY = 0>
__global__ void __launch_bounds__(WS_THREADS, 1)
    attention_forward_sm90_ws_kernel(__nv_bfloat16 *__restrict__ out, float *__restrict__ lse,
                                     const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                                     const __grid_constant__ CUtensorMap tv, int T, int H, int KV, int B) {
#ifdef ATTN_SM90
    static_assert(PIPELINED || BC == 64, "the unpipelined loop uses h90_tile (64-key tiles)");
    static_assert(PIPELINED || !(PINGPONG || SKIP_RESCALE || POLY_EVERY), "the options are the pipelined loop's");
    constexpr int KV_BYTES = BC * ROW_BYTES;
    // 128-key tiles need more than the 128 registers per thread that 512 threads allow: the
    // producer gives most of its share to the consumers (4 x 24 + 12 x 160 = 2016 per 16 warps)
    constexpr bool REG_SHUFFLE = BC == 128;
    // wg through a shuffle: ptxas then knows it is warp-uniform, so the shared-memory addresses and
    // wgmma descriptors derived from it live in uniform registers (v6's tile loop: 486 -> 461
    // instructions per warp, no R2UR moves)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    const H90Cta c = h90_cta(WS_BR, T, H, KV);
    const int h = c.h, b = c.b, kh = c.kh, q0 = c.q0;
    const uint32_t sQ = c.smem;
    const uint32_t sK0 = sQ + WS_Q_BYTES, sV0 = sK0 + WS_STAGES * KV_BYTES;  // stage s: + s * KV_BYTES
    const uint32_t barQ = sV0 + WS_STAGES * KV_BYTES;
    const uint32_t full0 = barQ + 8, empty0 = full0 + 8 * WS_STAGES;  // stage s: + 8 s

    const int q_last = min(T, q0 + WS_BR) - 1;
    const int n_tiles = q_last / BC + 1;

    if (tid == 0) {
        mbar_init(barQ, 1);
        for (int st = 0; st < WS_STAGES; st++) {
            mbar_init(full0 + 8 * st, 1);
            mbar_init(empty0 + 8 * st, 4 * WS_CONSUMERS);  // one arrival per consumer warp
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {  // producer
        if constexpr (REG_SHUFFLE) setmaxnreg_dec<24>();
        if (tid == 0) {
            mbar_arrive_expect_tx(barQ, WS_Q_BYTES);
            tma_load_4d(sQ, &tq, barQ, 0, h, q0, b);
            for (int it = 0; it < n_tiles; it++) {
                const int st = it % WS_STAGES, col0 = (n_tiles - 1 - it) * BC;
                // the stage's previous tile (it - WS_STAGES) was released: that is the empty
                // barrier's (it / WS_STAGES - 1)-th phase
                if (it >= WS_STAGES) mbar_wait(empty0 + 8 * st, (it / WS_STAGES - 1) & 1);
                mbar_arrive_expect_tx(full0 + 8 * st, 2 * KV_BYTES);
                tma_load_4d(sK0 + st * KV_BYTES, &tk, full0 + 8 * st, 0, kh, col0, b);
                tma_load_4d(sV0 + st * KV_BYTES, &tv, full0 + 8 * st, 0, kh, col0, b);
            }
        }
        return;  // every load issued is waited for by the consumers, who keep the CTA alive
    }

    if constexpr (REG_SHUFFLE) setmaxnreg_inc<160>();
    const int cw = wg - 1;                          // consumer index
    const int wg_row0 = q0 + cw * 64;
    const int wrow0 = wg_row0 + (warp % 4) * 16;
    const uint32_t sQw = sQ + cw * 64 * ROW_BYTES;
    float o[1][DTILES][4], m[1][2], l[1][2];
    h90_init(o, m, l);

    mbar_wait(barQ, 0);
    if constexpr (!PIPELINED) {
        // a stage is released once per tile by every consumer warp (skipped tiles included, so
        // the producer's count always completes), after the warp's wgmmas on it are complete
        auto release = [&](int st) {
            __syncwarp();
            if (lane == 0) mbar_arrive(empty0 + 8 * st);
        };
        for (int it = 0; it < n_tiles; it++) {
            const int st = it % WS_STAGES, col0 = (n_tiles - 1 - it) * BC;
            mbar_wait(full0 + 8 * st, (it / WS_STAGES) & 1);
            if (!(wg_row0 >= T || col0 > wg_row0 + 63))
                h90_tile(o, m, l, sQw, sK0 + st * KV_BYTES, sV0 + st * KV_BYTES, wrow0, col0, T, lane);
            release(st);
        }
    } else {
        if constexpr (PINGPONG)
            if (cw == 0) named_bar_arrive(1, 256);  // the first turn is consumer 0's
        ws_consume<BC, PINGPONG, SKIP_RESCALE, POLY_EVERY>(o, m, l, sQw, sK0, sV0, full0, empty0, 0, n_tiles, wg_row0, wrow0,
                                                           T, cw, lane, true, 0);
    }
    h90_store(out, lse, o, m, l, wrow0, b, h, T, H, lane);
#endif  // ATTN_SM90
}

// ---- stage 8 (v9): persistent --------------------------------------------------------
// Stage 7's consumers (ping-pong, rescale skipped, 1/POLY_EVERY polynomial exp2) in a grid of
// one CTA per SM that walks the work tiles (192 query rows of one (b, h)) blockIdx.x, + gridDim.x,
// ... in the order of the other stages' grids: the longest causal tiles first. With one 512-
// thread CTA per SM, a CTA per work tile leaves the SM idle while each CTA starts (Q and the
// first K/V tiles in flight) and ends (the output stores); here the producer loads the next
// work tile's Q (double-buffered) and K/V while the consumers finish the current one. The K/V
// ring's tile counter runs on across work tiles, as do the consumers' ping-pong turns.
// Shared memory: [Q buffers 0, 1][K stages][V stages][mbarriers: Q full 0..1, Q empty 0..1,
// full 0..3, empty 0..3].
constexpr int ws_persistent_smem() { return 1024 + 2 * WS_Q_BYTES + 2 * WS_STAGES * 128 * ROW_BYTES + (4 + 2 * WS_STAGES) * 8; }

template <int POLY_EVERY>
__global__ void __launch_bounds__(WS_THREADS, 1)
    attention_forward_sm90_persistent_kernel(__nv_bfloat16 *__restrict__ out, float *__restrict__ lse,
                                             const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                                             const __grid_constant__ CUtensorMap tv, int T, int H, int KV, int B) {
#ifdef ATTN_SM90
    constexpr int BC = 128, KV_BYTES = BC * ROW_BYTES;
    // wg through a shuffle: warp-uniform to ptxas (see attention_forward_sm90_ws_kernel)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    const uint32_t sQ0 = h90_cta(WS_BR, T, H, KV).smem;  // Q buffer j: + j * WS_Q_BYTES
    const uint32_t sK0 = sQ0 + 2 * WS_Q_BYTES, sV0 = sK0 + WS_STAGES * KV_BYTES;
    const uint32_t qfull0 = sV0 + WS_STAGES * KV_BYTES, qempty0 = qfull0 + 16;  // buffer j: + 8 j
    const uint32_t full0 = qempty0 + 16, empty0 = full0 + 8 * WS_STAGES;      // stage s: + 8 s
    const int n_qt = (T + WS_BR - 1) / WS_BR, n_work = n_qt * H * B;
    // work tile w: query rows from q0 of head h of sequence b (w / (H B) = 0 is the last query tile)
    auto decode = [&](int w, int &h, int &b, int &q0) {
        q0 = (n_qt - 1 - w / (H * B)) * WS_BR;
        b = (w / H) % B;
        h = w % H;
    };

    if (tid == 0) {
        for (int j = 0; j < 2; j++) {
            mbar_init(qfull0 + 8 * j, 1);
            mbar_init(qempty0 + 8 * j, 4 * WS_CONSUMERS);
        }
        for (int st = 0; st < WS_STAGES; st++) {
            mbar_init(full0 + 8 * st, 1);
            mbar_init(empty0 + 8 * st, 4 * WS_CONSUMERS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {  // producer
        setmaxnreg_dec<24>();
        if (tid == 0) {
            int g = 0;  // K/V tiles loaded so far
            for (int w = blockIdx.x, j = 0; w < n_work; w += gridDim.x, j++) {
                int h, b, q0;
                decode(w, h, b, q0);
                const int kh = h / (H / KV), n_tiles = (min(T, q0 + WS_BR) - 1) / BC + 1, qb = j & 1;
                // buffer qb last held work tile j - 2's Q: wait until its consumers released it
                if (j >= 2) mbar_wait(qempty0 + 8 * qb, ((j >> 1) - 1) & 1);
                mbar_arrive_expect_tx(qfull0 + 8 * qb, WS_Q_BYTES);
                tma_load_4d(sQ0 + qb * WS_Q_BYTES, &tq, qfull0 + 8 * qb, 0, h, q0, b);
                for (int it = 0; it < n_tiles; it++, g++) {
                    const int st = g % WS_STAGES, col0 = (n_tiles - 1 - it) * BC;
                    if (g >= WS_STAGES) mbar_wait(empty0 + 8 * st, (g / WS_STAGES - 1) & 1);
                    mbar_arrive_expect_tx(full0 + 8 * st, 2 * KV_BYTES);
                    tma_load_4d(sK0 + st * KV_BYTES, &tk, full0 + 8 * st, 0, kh, col0, b);
                    tma_load_4d(sV0 + st * KV_BYTES, &tv, full0 + 8 * st, 0, kh, col0, b);
                }
            }
        }
        return;
    }

    setmaxnreg_inc<160>();
    const int cw = wg - 1;
    if (cw == 0) named_bar_arrive(1, 256);  // the first turn is consumer 0's
    int g = 0;
    for (int w = blockIdx.x, j = 0; w < n_work; w += gridDim.x, j++) {
        int h, b, q0;
        decode(w, h, b, q0);
        const int n_tiles = (min(T, q0 + WS_BR) - 1) / BC + 1, qb = j & 1;
        const int wg_row0 = q0 + cw * 64, wrow0 = wg_row0 + (warp % 4) * 16;
        float o[1][DTILES][4], m[1][2], l[1][2];
        h90_init(o, m, l);
        mbar_wait(qfull0 + 8 * qb, (j >> 1) & 1);
        ws_consume<BC, true, true, POLY_EVERY>(o, m, l, sQ0 + qb * WS_Q_BYTES + cw * 64 * ROW_BYTES, sK0, sV0, full0, empty0,
                                               g, n_tiles, wg_row0, wrow0, T, cw, lane, w + (int)gridDim.x >= n_work,
                                               qempty0 + 8 * qb);
        h90_store(out, lse, o, m, l, wrow0, b, h, T, H, lane);
        g += n_tiles;
    }
#endif  // ATTN_SM90
}

// ---- host side: tensor maps through the driver entry point (no -lcuda) --------

// 4-D tensor map over a (B, T, heads, 64) bf16 array viewed as (d, head, t, b), innermost
// first; a box is `rows` consecutive tokens of one head (64 x 1 x rows x 1), 128-byte swizzled.
// Tokens past T (in the t dimension, not the next sequence) are zero-filled.
// The last 64 maps are kept: encoding three per call costs host time, and training calls with
// the same buffers and shapes every micro-step (a map holds only the address and the shape).
inline CUtensorMap h90_tensor_map(const __nv_bfloat16 *base, int B, int T, int heads, int rows) {
    struct Entry {
        const __nv_bfloat16 *base;
        int B, T, heads, rows;
        CUtensorMap map;
    };
    static Entry cache[64];
    static int cached = 0, next = 0;
    for (int i = 0; i < cached; i++) {
        const Entry &e = cache[i];
        if (e.base == base && e.B == B && e.T == T && e.heads == heads && e.rows == rows) return e.map;
    }
    CUtensorMap map;
    const cuuint64_t row = (cuuint64_t)HD * sizeof(__nv_bfloat16);
    cuuint64_t dims[4] = {(cuuint64_t)HD, (cuuint64_t)heads, (cuuint64_t)T, (cuuint64_t)B};
    cuuint64_t strides[3] = {row, row * heads, row * heads * T};  // bytes, dims 1..3
    cuuint32_t box[4] = {(cuuint32_t)HD, 1, (cuuint32_t)rows, 1};
    cuuint32_t estrides[4] = {1, 1, 1, 1};
    const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)base, dims, strides, box, estrides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) fatal_config("attention.cuh: cuTensorMapEncodeTiled failed (error %d) for B=%d T=%d heads=%d", (int)r, B, T, heads);
    cache[next] = {base, B, T, heads, rows, map};
    next = (next + 1) % 64;
    cached = cached < 64 ? cached + 1 : 64;
    return map;
}

}  // namespace attn

// the same contract as attention_forward_mma, on an sm_90a wgmma + TMA kernel: stage 1 (S1,
// attention_forward_sm90_kernel), 2 (S2, warp-specialized attention_forward_sm90_ws_kernel),
// 3 (S2 + the consumers' P V overlapped with the next tile's S and softmax), 4 (stage 3 with
// 128-key tiles, the registers for them moved from the producer with setmaxnreg), 5 (stage 4
// with the consumers taking turns on the tensor cores: ping-pong), 6 (stage 5, o rescaled only
// when a row's max moved, 1/8 of the exponentials on the FMA pipe), 7 (stage 6 with 1/4),
// 8 (stage 6 in a persistent grid: one CTA per SM walking the work tiles; persistent_ctas > 0
// caps the grid, so that a check on small shapes has each CTA walk many work tiles).
// q_from: attention_forward's (stages 1..7 launch only the query tiles that reach row q_from;
// stage 8 computes every row).
constexpr int ATTN_FWD_HOPPER_STAGES = 8;
inline void attention_forward_wgmma(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                    const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd, cudaStream_t stream,
                                    int stage = 1, int persistent_ctas = 0, int q_from = 0) {
    ProfScope prof_(PROF_ATTN_FWD, stream);
    using namespace attn;
    check_forward("attention_forward_wgmma", out, q, k, v, B, T, H, KV, hd);
    if (!sm90_available())
        fatal_config("attention.cuh: attention_forward_wgmma needs an sm_90 GPU and an sm_90a build (GPU_ARCH=90a)");
    if (stage < 1 || stage > ATTN_FWD_HOPPER_STAGES)
        fatal_config("attention.cuh: attention_forward_wgmma: stage %d unknown (1..%d)", stage, ATTN_FWD_HOPPER_STAGES);
    typedef void (*Kernel)(__nv_bfloat16 *, float *, const CUtensorMap, const CUtensorMap, const CUtensorMap, int, int, int, int);
    // stage -> kernel, threads, key tile, query rows per work tile, shared memory, persistent
    static const struct {
        Kernel kernel;
        int threads, bc, br, smem;
        bool persistent;
    } stages[ATTN_FWD_HOPPER_STAGES + 1] = {
        {nullptr, 0, 0, 0, 0, false},
        {attention_forward_sm90_kernel, H90_THREADS, H90_BC, H90_BR, H90_SMEM, false},
        {attention_forward_sm90_ws_kernel<false, 64>, WS_THREADS, 64, WS_BR, ws_smem(64), false},
        {attention_forward_sm90_ws_kernel<true, 64>, WS_THREADS, 64, WS_BR, ws_smem(64), false},
        {attention_forward_sm90_ws_kernel<true, 128>, WS_THREADS, 128, WS_BR, ws_smem(128), false},
        {attention_forward_sm90_ws_kernel<true, 128, true>, WS_THREADS, 128, WS_BR, ws_smem(128), false},
        {attention_forward_sm90_ws_kernel<true, 128, true, true, 8>, WS_THREADS, 128, WS_BR, ws_smem(128), false},
        {attention_forward_sm90_ws_kernel<true, 128, true, true, 4>, WS_THREADS, 128, WS_BR, ws_smem(128), false},
        {attention_forward_sm90_persistent_kernel<8>, WS_THREADS, 128, WS_BR, ws_persistent_smem(), true},
    };
    const auto &sg = stages[stage];
    const int smem = sg.smem;
    static bool configured[ATTN_FWD_HOPPER_STAGES + 1] = {};
    if (!configured[stage]) {
        cudaCheck(cudaFuncSetAttribute(sg.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        configured[stage] = true;
    }
    const CUtensorMap tq = h90_tensor_map(q, B, T, H, sg.br);
    const CUtensorMap tk = h90_tensor_map(k, B, T, KV, sg.bc);
    const CUtensorMap tv = h90_tensor_map(v, B, T, KV, sg.bc);
    if (q_from < 0 || q_from >= T) fatal_config("attention.cuh: attention_forward: q_from=%d must be in [0, T=%d)", q_from, T);
    // the tiles wholly below q_from are not launched (h90_cta counts z back from the last tile)
    dim3 grid(H, B, ceil_div(T, sg.br) - q_from / sg.br);
    if (sg.persistent) {
        static int sms = 0;
        if (!sms) {
            int dev = 0;
            cudaCheck(cudaGetDevice(&dev));
            cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        }
        grid = dim3(std::min(H * B * ceil_div(T, sg.br), persistent_ctas > 0 ? persistent_ctas : sms));
    }
    sg.kernel<<<grid, sg.threads, smem, stream>>>(out, lse, tq, tk, tv, T, H, KV, B);
    cudaCheckLaunch();
}

// the stage attention_forward uses on Hopper (5 = v6, the measured fastest: docs/ATTENTION_KERNELS.md;
// 0 keeps the mma.sync kernel there too). Developer knob, to measure stages in one process: the
// environment variable ATTN_FWD_STAGE (0..8) overrides it, read once.
constexpr int ATTN_FWD_HOPPER_STAGE = 5;
inline int attn_fwd_stage() {
    static const int stage = attn::stage_from_env("ATTN_FWD_STAGE", ATTN_FWD_HOPPER_STAGE, ATTN_FWD_HOPPER_STAGES);
    return stage;
}

// out (B,T,H,hd) bf16, lse (B,H,T) fp32 <- causal softmax(q k^T / sqrt(hd)) v, GQA h -> h / (H/KV):
// the wgmma kernel on Hopper (sm_90a builds), the portable mma.sync kernel elsewhere.
// q_from > 0: only the rows [q_from, T) of each sequence are wanted (the sliding eval's last
// block); the Hopper kernels then skip the query tiles below it, whose rows of out and lse are
// left as they were. The rows computed are bit for bit those of a full call: the same tiles,
// the same kernel (a query row's result does not depend on which other tiles run).
inline void attention_forward(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                              const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd, cudaStream_t stream,
                              int q_from = 0) {
    if (attn_fwd_stage() > 0 && sm90_available())
        attention_forward_wgmma(out, lse, q, k, v, B, T, H, KV, hd, stream, attn_fwd_stage(), 0, q_from);
    else attention_forward_mma(out, lse, q, k, v, B, T, H, KV, hd, stream);
}
