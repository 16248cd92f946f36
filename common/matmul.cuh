// matmul.cuh: every GEMM of the model and of Muon, on cuBLASLt: bf16 operands, fp32 accumulation
// (CUBLAS_COMPUTE_32F), bf16 or fp32 output. One handle, one workspace, and a cache of the chosen
// algorithm per problem, so the heuristic query runs once per shape.
//
// Row-major <-> column-major. Our matrices are row-major (as in C and PyTorch); cuBLAS is
// column-major. A row-major (R, C) matrix with leading dimension C is, byte for byte, the
// column-major (C, R) matrix: its transpose. So for the row-major
//     D (M, N) = op(A) (M, K) @ op(B) (K, N)
// we ask cuBLAS for the column-major D^T (N, M) = op(B)^T @ op(A)^T: the operands swap places
// (cuBLAS's A is our B, its B is our A), m = N, n = M, and each transpose flag carries over
// unchanged: our B stored (K, N) is seen by cuBLAS as the (N, K) matrix op(B)^T already (no
// transpose), and our B stored (N, K) (tb) is seen as (K, N), which cuBLAS must transpose.
// Leading dimensions are the row lengths of the stored row-major matrices. That is all of it;
// the rest of the code speaks row-major only.
//
// The three GEMMs of an nn.Linear, W (OC, IC) row-major as PyTorch stores it:
//   matmul_forward           out (N, OC)  = inp (N, IC) @ W^T      bf16 out
//   matmul_backward, dinp    dinp (N, IC) (+)= dout (N, OC) @ W    bf16 out
//   matmul_backward, dW      dW (OC, IC) (+)= dout^T @ inp         fp32 out
// The weight gradient is written in fp32 and accumulated there over micro-steps (beta = 1), so
// gradient accumulation never rounds to bf16. The CPU twins are matmul_forward_cpu /
// matmul_backward_cpu in model_cpu.h (which always accumulate; here it is a flag).
//
// Epilogues: what cuBLASLt can fuse into the GEMM's store, and what we use.
//   - beta * C (+ alpha scaling): used for gradient accumulation (dW over micro-steps, dinp of a
//     tensor read by several GEMMs) and in Newton-Schulz (B = c*A@A + b*A, X' = B@X + a*X).
//     With a bf16 output some cuBLASLt kernels round alpha*A@B to bf16 before adding beta*C
//     (measured on an H200: dinp += at N=2048, K=1536 showed exactly sqrt(2) times the error of
//     one rounding), i.e. what PyTorch does when autograd sums two bf16 gradients. Accumulations
//     that must not round (dW over micro-steps) use the fp32 output.
//   - RELU (max(0, .)): available as GEMM_EPI_RELU. relu^2 has no cuBLASLt epilogue: the fc GEMM
//     can emit r = relu(u) (what relu^2's backward needs: d/du = 2r), and the square is one more
//     elementwise pass. bf16(relu(u)) == relu(bf16(u)), so it changes no numbers. On Hopper our
//     own GEMM does both in its epilogue (matmul_relu2_forward / _backward_dx, the last section).
//   - DRELU/DGELU/BGRAD*/BIAS*/GELU*: no biases and no GELU in this model, and DRELU multiplies
//     by relu'(u) (0/1), not by relu^2's 2r; none apply.
//   - q and k's per-head RMSNorm, RoPE and gain: no cuBLASLt epilogue either; our Hopper GEMM
//     writes them from its epilogue (matmul_forward_qkv_norm, the grouped section at the end).
//   - a per-column alpha vector (CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST) could fuse
//     x + mlp_scale * proj(h), but the backward needs proj(h) itself for d(mlp_scale), so the
//     product must be stored anyway; not used.
//
// When cuBLASLt has no algorithm for a problem (odd leading dimensions / misaligned pointers can
// do that), a plain tiled fallback kernel computes it (correct, slow, reported once on stderr).
//
// Autotuning (MATMUL_AUTOTUNE=n, read once; default 8, 0 or 1 = the heuristic's first choice): on
// a shape's first call, time the heuristic's first n algorithms (one warm-up and 3 timed runs
// each, beta = 0 into a transient scratch output of the problem's size, so nothing the caller
// owns is written twice) and keep the fastest; with the variable set, a line per shape on stderr
// says what it found.
// The heuristic's first choice was up to 20% slower on the seed's big GEMMs (H200: fc 216.6 ->
// 177.1 us, c_q-shaped 80 -> 71 us): -7.5 ms a training step (594.4 -> 586.9, same call,
// 2026-12-01). Timings move between runs, so two processes may pick different kernels for a
// shape and differ in the last bits, as the attention backward's dQ already does. The eval's
// one-pass GEMMs keep their row-invariant choice (never tuned).
//
// Determinism: the cached algorithm is reused for every call of a shape, so within a process a
// shape always runs the same kernel (and with MATMUL_AUTOTUNE=0, run to run on the same GPU). Not thread-safe, and the single workspace means GEMMs must not run on two
// streams at once. Row invariance: inside a MatmulOnePass scope (the eval forward) every GEMM sums
// each dot product in one sequence (CUBLASLT_REDUCTION_SCHEME_NONE: no split-K) and runs the
// algorithm chosen for GEMM_ONE_PASS_M rows whatever its M (when that algorithm runs it), so an
// output row does not depend on how many rows the problem has: the eval's scored-only last block
// (model_gpu_forward's score_from) reproduces the full forward's rows bit for bit, and the evals
// give the same numbers at any batch size.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <deque>
#include <type_traits>
#include <vector>

#include "cuda_utils.cuh"

// ----------------------------------------------------------------------------
// error check with file:line

inline void cublas_check(cublasStatus_t st, const char *file, int line) {
    if (st != CUBLAS_STATUS_SUCCESS)
        fatal_code(4, "cuBLAS error at %s:%d: %s (status %d)%s", file, line, cublasLtGetStatusString(st), (int)st,
                   st == CUBLAS_STATUS_NOT_INITIALIZED ? " HINT: is a GPU visible and the driver loaded?" : "");
}
#define cublasCheck(st) cublas_check((st), __FILE__, __LINE__)

// ----------------------------------------------------------------------------
// the fallback GEMM: a plain shared-memory tiled kernel, same semantics as gemm() below

constexpr int GEMM_FB_TILE = 16;

template <typename OutT>
__device__ inline float gemm_load_out(const OutT *p) { return (float)*p; }
template <>
__device__ inline float gemm_load_out<bf16>(const bf16 *p) { return __bfloat162float(*p); }
template <typename OutT>
__device__ inline OutT gemm_store_cast(float v) { return (OutT)v; }
template <>
__device__ inline bf16 gemm_store_cast<bf16>(float v) { return __float2bfloat16(v); }

// d[z] (M, N) = epi(alpha * op(a[z]) @ op(b[z]) + beta * c[z]); grid (M tiles, N tiles, batch)
template <typename OutT>
__global__ void gemm_fallback_kernel(OutT *d, const OutT *c, const bf16 *a, const bf16 *b, int ta, int tb, int M, int N,
                                     int K, float alpha, float beta, long long sa, long long sb, long long sd, int relu) {
    __shared__ float As[GEMM_FB_TILE][GEMM_FB_TILE + 1], Bs[GEMM_FB_TILE][GEMM_FB_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.x * GEMM_FB_TILE + ty, col = blockIdx.y * GEMM_FB_TILE + tx;
    a += blockIdx.z * sa;
    b += blockIdx.z * sb;
    d += blockIdx.z * sd;
    c += blockIdx.z * sd;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += GEMM_FB_TILE) {
        int ka = k0 + tx, kb = k0 + ty;  // op(a)[row][ka], op(b)[kb][col]
        As[ty][tx] = (row < M && ka < K) ? __bfloat162float(ta ? a[(size_t)ka * M + row] : a[(size_t)row * K + ka]) : 0.f;
        Bs[ty][tx] = (kb < K && col < N) ? __bfloat162float(tb ? b[(size_t)col * K + kb] : b[(size_t)kb * N + col]) : 0.f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < GEMM_FB_TILE; k++) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) {
        size_t i = (size_t)row * N + col;
        float v = alpha * acc;
        if (beta != 0.f) v += beta * gemm_load_out(c + i);
        if (relu) v = fmaxf(v, 0.f);
        d[i] = gemm_store_cast<OutT>(v);
    }
}

// ----------------------------------------------------------------------------
// the cuBLASLt context: handle, workspace, cached plans

enum GemmEpilogue { GEMM_EPI_NONE = 0, GEMM_EPI_RELU = 1 };

// 32 MiB: what NVIDIA recommends for Hopper (split-K and stream-K kernels use it); plenty for A100.
constexpr size_t MATMUL_WORKSPACE_BYTES = 32ull << 20;
// One-pass GEMMs (MatmulOnePass) take the algorithm chosen for this many rows: the eval's batch
// of 32 windows of 2048 (see "Row invariance" above).
constexpr int GEMM_ONE_PASS_M = 65536;

// Everything that selects an algorithm. Alignments are the largest power of two (<= 256 bytes)
// dividing each pointer (and, in a batch, each batch stride): cuBLASLt assumes 256-byte aligned
// buffers unless told otherwise, and would pick kernels that fault on views into a buffer.
struct GemmKey {
    int M, N, K, batch, ta, tb, out_type, epi, beta_nonzero, one_pass;
    long long sa, sb, sd;
    int align_a, align_b, align_c, align_d;
    bool operator==(const GemmKey &o) const {
        return M == o.M && N == o.N && K == o.K && batch == o.batch && ta == o.ta && tb == o.tb && out_type == o.out_type &&
               epi == o.epi && beta_nonzero == o.beta_nonzero && one_pass == o.one_pass && sa == o.sa && sb == o.sb && sd == o.sd &&
               align_a == o.align_a && align_b == o.align_b && align_c == o.align_c && align_d == o.align_d;
    }
};

struct GemmPlan {
    GemmKey key;
    bool fallback = false;  // no cuBLASLt algorithm: use gemm_fallback_kernel
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t lay_a = nullptr, lay_b = nullptr, lay_d = nullptr;  // cuBLAS's A (our B), B (our A), C = D
    cublasLtMatmulAlgo_t algo;
    bool tuned = false;  // MATMUL_AUTOTUNE has timed this shape's candidates
};

struct MatmulContext {
    cublasLtHandle_t handle = nullptr;
    void *workspace = nullptr;
    std::deque<GemmPlan> plans;  // a deque: references stay valid as it grows
    bool force_fallback = false;  // dev checks only: run everything through the fallback kernel
    bool one_pass = false;        // no split-K (set by MatmulOnePass)
};

inline MatmulContext &matmul_context() {
    static MatmulContext ctx;
    if (!ctx.handle) {
        cublasCheck(cublasLtCreate(&ctx.handle));
        cudaCheck(cudaMalloc(&ctx.workspace, MATMUL_WORKSPACE_BYTES));
    }
    return ctx;
}

// Within its lifetime (when `on`), GEMMs run with one-pass dot products: see "Row invariance" above.
struct MatmulOnePass {
    bool prev;
    explicit MatmulOnePass(bool on) : prev(matmul_context().one_pass) { matmul_context().one_pass = prev || on; }
    ~MatmulOnePass() { matmul_context().one_pass = prev; }
};

// Free the handle, the workspace and the cached plans (optional, at exit).
inline void matmul_teardown() {
    MatmulContext &ctx = matmul_context();
    for (GemmPlan &p : ctx.plans) {
        if (p.op) cublasCheck(cublasLtMatmulDescDestroy(p.op));
        if (p.lay_a) cublasCheck(cublasLtMatrixLayoutDestroy(p.lay_a));
        if (p.lay_b) cublasCheck(cublasLtMatrixLayoutDestroy(p.lay_b));
        if (p.lay_d) cublasCheck(cublasLtMatrixLayoutDestroy(p.lay_d));
    }
    ctx.plans.clear();
    cudaFreeCheck(ctx.workspace);
    cublasCheck(cublasLtDestroy(ctx.handle));
    ctx.handle = nullptr;
}

inline int gemm_alignment(const void *p, long long stride_bytes, int batch) {
    int a = 256;
    while (a > 1 && (((uintptr_t)p % a) != 0 || (batch > 1 && stride_bytes % a != 0))) a /= 2;
    return a;
}

// A column-major layout of `rows` x `cols` with leading dimension ld, batched with a stride.
inline cublasLtMatrixLayout_t gemm_layout(cudaDataType_t t, long long rows, long long cols, long long ld, int batch,
                                          long long stride) {
    cublasLtMatrixLayout_t l;
    cublasCheck(cublasLtMatrixLayoutCreate(&l, t, (uint64_t)rows, (uint64_t)cols, (int64_t)ld));
    if (batch > 1) {
        int32_t bc = batch;
        int64_t st = stride;
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st));
    }
    return l;
}

// The algorithm constraints of a problem: workspace, operand alignments, split-K reduction.
inline cublasLtMatmulPreference_t gemm_preference(const GemmKey &k) {
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = MATMUL_WORKSPACE_BYTES;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    uint32_t al[4] = {(uint32_t)k.align_b, (uint32_t)k.align_a, (uint32_t)k.align_c, (uint32_t)k.align_d};  // cuBLAS A = our B
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], sizeof al[3]));
    // Split-K: with a bf16 output, keep the partial sums in fp32 (a workspace reduction, or none);
    // the INPLACE and OUTPUT_TYPE schemes add the parts up in the output type, rounding to bf16
    // once per part. fp32 outputs may use any scheme.
    // one_pass: no split-K at all (row invariance, see the top of the file).
    uint32_t red = k.one_pass        ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_NONE
                   : k.out_type == 1 ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK
                                     : (uint32_t)(CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    return pref;
}

// Find or build the plan of a problem: descriptors in column-major terms, then the heuristic's
// best algorithm (or the fallback when it has none).
inline GemmPlan &gemm_plan(const GemmKey &k) {
    MatmulContext &ctx = matmul_context();
    for (GemmPlan &p : ctx.plans)
        if (p.key == k) return p;
    GemmPlan p;
    p.key = k;
    const cudaDataType_t dt = k.out_type == 1 ? CUDA_R_32F : CUDA_R_16BF;
    cublasCheck(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // cuBLAS computes D^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M): its first operand is our B.
    cublasOperation_t opA = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N, opB = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB));
    cublasLtEpilogue_t epi = k.epi == GEMM_EPI_RELU ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    // our B stored (K, N) row-major = column-major (N, K), ld N; stored (N, K) (tb) = column-major (K, N), ld K
    p.lay_a = k.tb ? gemm_layout(CUDA_R_16BF, k.K, k.N, k.K, k.batch, k.sb) : gemm_layout(CUDA_R_16BF, k.N, k.K, k.N, k.batch, k.sb);
    // our A stored (M, K) row-major = column-major (K, M), ld K; stored (K, M) (ta) = column-major (M, K), ld M
    p.lay_b = k.ta ? gemm_layout(CUDA_R_16BF, k.M, k.K, k.M, k.batch, k.sa) : gemm_layout(CUDA_R_16BF, k.K, k.M, k.K, k.batch, k.sa);
    // D (M, N) row-major = column-major (N, M), ld N; C has the same layout
    p.lay_d = gemm_layout(dt, k.N, k.M, k.N, k.batch, k.sd);

    cublasLtMatmulPreference_t pref = gemm_preference(k);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (k.one_pass && k.batch == 1 && !k.ta) {
        // row invariance: the algorithm the heuristic picks for GEMM_ONE_PASS_M rows, whatever M is
        // (when it runs this problem), so that every M of the same N, K runs the same kernel
        cublasLtMatrixLayout_t lb = gemm_layout(CUDA_R_16BF, k.K, GEMM_ONE_PASS_M, k.K, 1, 0);
        cublasLtMatrixLayout_t ld = gemm_layout(dt, k.N, GEMM_ONE_PASS_M, k.N, 1, 0);
        st = cublasLtMatmulAlgoGetHeuristic(ctx.handle, p.op, p.lay_a, lb, ld, ld, pref, 1, &res, &found);
        cublasCheck(cublasLtMatrixLayoutDestroy(lb));
        cublasCheck(cublasLtMatrixLayoutDestroy(ld));
        cublasLtMatmulHeuristicResult_t chk;
        if (st == CUBLAS_STATUS_SUCCESS && found &&
            cublasLtMatmulAlgoCheck(ctx.handle, p.op, p.lay_a, p.lay_b, p.lay_d, p.lay_d, &res.algo, &chk) != CUBLAS_STATUS_SUCCESS) {
            found = 0;
            fprintf(stderr, "note: matmul: the %d-row algorithm does not run M=%d N=%d K=%d: its rows may differ in the last bit "
                            "from those of other row counts\n", GEMM_ONE_PASS_M, k.M, k.N, k.K);
        }
    }
    if (!found) st = cublasLtMatmulAlgoGetHeuristic(ctx.handle, p.op, p.lay_a, p.lay_b, p.lay_d, p.lay_d, pref, 1, &res, &found);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || found == 0 || res.state != CUBLAS_STATUS_SUCCESS) {
        p.fallback = true;
        fprintf(stderr, "warning: matmul: cuBLASLt has no algorithm for M=%d N=%d K=%d batch=%d ta=%d tb=%d out=%s align=%d/%d/%d; "
                        "using the slow fallback kernel\n",
                k.M, k.N, k.K, k.batch, k.ta, k.tb, k.out_type ? "f32" : "bf16", k.align_a, k.align_b, k.align_d);
    } else {
        p.algo = res.algo;
    }
    ctx.plans.push_back(p);
    return ctx.plans.back();
}

// MATMUL_AUTOTUNE (see the top of this file): how many of the heuristic's algorithms to time; 0 or
// 1 = take its first choice.
constexpr int MATMUL_AUTOTUNE_DEFAULT = 8;
inline int matmul_autotune_candidates() {
    static const int n = env_int("MATMUL_AUTOTUNE", 0, 64, MATMUL_AUTOTUNE_DEFAULT, "algorithms to time");
    return n;
}

// Time the heuristic's first matmul_autotune_candidates() algorithms of plan p on the caller's
// operands a, b, writing a scratch output (beta = 0), and keep the fastest in p.algo.
inline void gemm_autotune(GemmPlan &p, const bf16 *a, const bf16 *b, void *d, size_t osize, float alpha, cudaStream_t stream) {
    MatmulContext &ctx = matmul_context();
    const GemmKey &k = p.key;
    const int want = matmul_autotune_candidates();
    std::vector<cublasLtMatmulHeuristicResult_t> res(want);
    int found = 0;
    cublasLtMatmulPreference_t pref = gemm_preference(k);
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(ctx.handle, p.op, p.lay_a, p.lay_b, p.lay_d, p.lay_d, pref, want, res.data(), &found);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || found < 2) return;
    // the scratch output must keep d's alignment class (part of the key): offset it alike
    const size_t bytes = (size_t)k.batch * (k.batch > 1 ? (size_t)k.sd : (size_t)k.M * k.N) * osize + 256;
    char *scratch = nullptr;
    cudaCheck(cudaStreamSynchronize(stream));
    cudaCheck(cudaMalloc(&scratch, bytes + 256));
    void *out = scratch + ((uintptr_t)d % 256);
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    const float beta = 0.f;
    float best_ms = 0, first_ms = 0;
    int best = -1;
    for (int i = 0; i < found; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        auto run = [&] {
            return cublasLtMatmul(ctx.handle, p.op, &alpha, b, p.lay_a, a, p.lay_b, &beta, out, p.lay_d, out, p.lay_d, &res[i].algo,
                                  ctx.workspace, MATMUL_WORKSPACE_BYTES, stream);
        };
        if (run() != CUBLAS_STATUS_SUCCESS) continue;  // an algorithm that refuses this problem
        cudaCheck(cudaEventRecord(e0, stream));
        for (int r = 0; r < 3; r++) cublasCheck(run());
        cudaCheck(cudaEventRecord(e1, stream));
        cudaCheck(cudaEventSynchronize(e1));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
        if (i == 0) first_ms = ms / 3;
        if (best < 0 || ms / 3 < best_ms) best = i, best_ms = ms / 3;
    }
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaFree(scratch));
    if (best < 0) return;
    if (getenv("MATMUL_AUTOTUNE"))  // only when asked for: a line per shape
        fprintf(stderr, "matmul: autotune M=%d N=%d K=%d ta=%d tb=%d out=%s beta=%d: heuristic's first %.1f us, best (#%d of %d) %.1f us\n",
            k.M, k.N, k.K, k.ta, k.tb, k.out_type ? "f32" : "bf16", k.beta_nonzero, 1e3 * first_ms, best, found, 1e3 * best_ms);
    p.algo = res[best].algo;
}

// ----------------------------------------------------------------------------
// the general launcher

// d[z] = epi(alpha * op(a[z]) @ op(b[z]) + beta * c[z]) for z in [0, batch), all row-major:
//   op(a) (M, K): a stored (M, K), or (K, M) when ta;   op(b) (K, N): b stored (K, N), or (N, K) when tb;
//   d and c (M, N), both of out_type (bf16 or fp32), bf16 a and b, fp32 accumulation and scaling;
//   c may be null (then c = d: in-place accumulation); c is read only when beta != 0;
//   stride_*: elements from one matrix of the batch to the next (unused when batch == 1); c uses stride_d.
// d must not overlap a or b (c may be d exactly).
inline void gemm(void *d, cudaDataType_t out_type, const void *c, const bf16 *a, bool ta, const bf16 *b, bool tb, int M,
                 int N, int K, float alpha, float beta, int batch, long long stride_a, long long stride_b, long long stride_d,
                 GemmEpilogue epi, cudaStream_t stream) {
    if (M <= 0 || N <= 0 || K <= 0 || batch <= 0)
        fatal("matmul: bad shape M=%d N=%d K=%d batch=%d (all must be positive)", M, N, K, batch);
    if (!d || !a || !b) fatal("matmul: null pointer (d=%p a=%p b=%p)", d, (const void *)a, (const void *)b);
    if (out_type != CUDA_R_16BF && out_type != CUDA_R_32F) fatal("matmul: output type must be bf16 or fp32");
    if (!c) c = d;
    const size_t osize = out_type == CUDA_R_32F ? 4 : 2;
    if ((uintptr_t)a % 2 || (uintptr_t)b % 2 || (uintptr_t)d % osize || (uintptr_t)c % osize)
        fatal("matmul: pointers are not aligned to their element size");
    if (d == (const void *)a || d == (const void *)b) fatal("matmul: output aliases an input operand (M=%d N=%d K=%d)", M, N, K);
    if (batch > 1 && (stride_a < (long long)M * K || stride_b < (long long)K * N || stride_d < (long long)M * N))
        fatal("matmul: batch strides (%lld, %lld, %lld) are smaller than the matrices (%lld, %lld, %lld)", stride_a, stride_b,
              stride_d, (long long)M * K, (long long)K * N, (long long)M * N);
    if (batch == 1) stride_a = stride_b = stride_d = 0;
    MatmulContext &ctx = matmul_context();
    GemmKey k;
    k.M = M; k.N = N; k.K = K; k.batch = batch; k.ta = ta; k.tb = tb;
    k.out_type = out_type == CUDA_R_32F ? 1 : 0;
    k.epi = epi;
    k.beta_nonzero = beta != 0.f;
    k.one_pass = ctx.one_pass;
    k.sa = stride_a; k.sb = stride_b; k.sd = stride_d;
    k.align_a = gemm_alignment(a, stride_a * 2, batch);
    k.align_b = gemm_alignment(b, stride_b * 2, batch);
    k.align_c = gemm_alignment(c, stride_d * (long long)osize, batch);
    k.align_d = gemm_alignment(d, stride_d * (long long)osize, batch);
    GemmPlan *p = ctx.force_fallback ? nullptr : &gemm_plan(k);
    if (!p || p->fallback) {
        if (batch > 65535) fatal("matmul: fallback kernel supports at most 65535 batch entries, got %d", batch);
        if (ceil_div(N, GEMM_FB_TILE) > 65535) fatal("matmul: fallback kernel supports N up to %d, got %d", 65535 * GEMM_FB_TILE, N);
        dim3 grid(ceil_div(M, GEMM_FB_TILE), ceil_div(N, GEMM_FB_TILE), batch), block(GEMM_FB_TILE, GEMM_FB_TILE);
        if (out_type == CUDA_R_32F)
            gemm_fallback_kernel<float><<<grid, block, 0, stream>>>((float *)d, (const float *)c, a, b, ta, tb, M, N, K, alpha,
                                                                  beta, stride_a, stride_b, stride_d, epi == GEMM_EPI_RELU);
        else
            gemm_fallback_kernel<bf16><<<grid, block, 0, stream>>>((bf16 *)d, (const bf16 *)c, a, b, ta, tb, M, N, K, alpha,
                                                                 beta, stride_a, stride_b, stride_d, epi == GEMM_EPI_RELU);
        cudaCheckLaunch();
        return;
    }
    if (!p->tuned && !k.one_pass) {
        p->tuned = true;
        if (matmul_autotune_candidates() > 1) gemm_autotune(*p, a, b, d, osize, alpha, stream);
    }
    // cuBLAS's A is our b, its B our a (see the top of this file)
    cublasCheck(cublasLtMatmul(ctx.handle, p->op, &alpha, b, p->lay_a, a, p->lay_b, &beta, c, p->lay_d, d, p->lay_d, &p->algo,
                               ctx.workspace, MATMUL_WORKSPACE_BYTES, stream));
#ifdef SYNC_CHECK
    cudaCheck(cudaStreamSynchronize(stream));
#endif
}

// ----------------------------------------------------------------------------
// the model's GEMMs (nn.Linear, no bias)

// out (N, OC) = inp (N, IC) @ weight^T, weight (OC, IC); bf16 out. relu: out = max(0, .) fused.
inline void matmul_forward(bf16 *out, const bf16 *inp, const bf16 *weight, int N, int IC, int OC, cudaStream_t stream,
                           bool relu = false) {
    ProfScope prof_(PROF_GEMM, stream);
    gemm(out, CUDA_R_16BF, nullptr, inp, false, weight, true, N, OC, IC, 1.f, 0.f, 1, 0, 0, 0,
         relu ? GEMM_EPI_RELU : GEMM_EPI_NONE, stream);
}

// dinp (N, IC) (+)= dout (N, OC) @ weight        (bf16; skipped when dinp is null)
// dweight (OC, IC) (+)= dout^T @ inp             (fp32; skipped when dweight is null)
// accumulate_*: add into the existing values (beta = 1) instead of overwriting them.
inline void matmul_backward(bf16 *dinp, float *dweight, const bf16 *dout, const bf16 *inp, const bf16 *weight, int N, int IC,
                            int OC, bool accumulate_dinp, bool accumulate_dweight, cudaStream_t stream) {
    ProfScope prof_(PROF_GEMM, stream);
    if (dinp) gemm(dinp, CUDA_R_16BF, nullptr, dout, false, weight, false, N, IC, OC, 1.f, accumulate_dinp ? 1.f : 0.f, 1, 0, 0, 0,
                   GEMM_EPI_NONE, stream);
    if (dweight) gemm(dweight, CUDA_R_32F, nullptr, dout, true, inp, false, OC, IC, N, 1.f, accumulate_dweight ? 1.f : 0.f, 1, 0, 0,
                      0, GEMM_EPI_NONE, stream);
}

// ----------------------------------------------------------------------------
// the MLP's fc GEMM with relu^2 fused into its epilogue (Hopper, sm_90a)
//
//   matmul_relu2_forward         out (M, N) = bf16(relu(A W^T)^2)       A (M, K), W (N, K): both K-major
//   matmul_relu2_backward_dx     dfc (M, N) = bf16((dY W) * 2 sqrt(h))  dY (M, K), W (K, N): B N-major;
//                                                                       h (M, N) = the forward's relu^2
//   matmul_relu2_backward_dx_wt  the same from W^T given as wt (N, K): B K-major (the forward's layout)
// from the fp32 accumulator: one rounding to bf16 where cuBLASLt's RELU epilogue + relu2_forward
// (or cuBLASLt + relu2_backward_from_out) round twice, and no second pass over the 302 MB
// (seed shape) output. CPU twins: matmul_relu2_forward_cpu / matmul_relu2_backward_dx_cpu
// (model_cpu.h). The model picks these or the cuBLASLt pair with MLP_GEMM (model_gpu.cuh).
//
// The kernel (one for all; template parameters: EPI the epilogue and its pipeline, BNM B's
// major-ness): persistent, one CTA of 384 threads per SM walking 128 x 256 output tiles (tile t:
// rows (t / n_tiles) * 128, columns (t % n_tiles) * 256: the CTAs running at once share A's row
// blocks, so A streams from DRAM once and W (1.5 MB) stays in L2). Warpgroup 0 is the producer
// (setmaxnreg down to 40, one thread issues): per 64-wide k-block it TMA-loads A (128 x 64) and
// B (4 boxes of 64 columns x 64 k) into a ring of 48 KiB stages (128-byte swizzle) and signals a
// "full" mbarrier; it runs ahead across tiles, so the next tile's loads fly during this tile's
// epilogue (K = 512 is only 8 k-blocks). Warpgroups 1, 2 (setmaxnreg 232) own rows 0..63 /
// 64..127 of the tile: 4 wgmma m64n256k16 per k-block into 128 fp32 registers, one commit group
// per k-block; after the wait for all but the newest group, the previous stage goes back to the
// producer ("empty", 256 arrivals). The epilogue applies relu^2 (or the gradient factor 2 sqrt(h))
// to the registers, writes bf16 into a swizzled shared tile (conflict-free 4-byte stores), and
// one thread per warpgroup TMA-stores its 64 rows (full 128-byte lines; rows past M and columns
// past N are not written). Any M (TMA zero-fills rows past M), K and N multiples of 64 (checked).
// The epilogues (EPI):
//   EPI_FWD    relu^2; 4 stages; two passes of 128 columns through a 32 KiB tile.
//   EPI_HTILE  backward v0: 3 stages; one pass through a 64 KiB tile that the producer fills with
//              the tile's h (each thread reads h where it then writes its result). The h load of
//              tile i + 1 must wait until tile i's output stores have read that tile (checked by
//              the consumers at k-block 0 of tile i + 1, which stalls their first k-block), and
//              the producer blocks on that before it loads any further k-block: h (64 KiB, from
//              DRAM) and the ring (3 stages: 2 k-blocks of lookahead against L2 latency) are on
//              the critical path of every tile. Measured 593.7 us at the seed shape (N-major B),
//              against 237.5 for the forward.
//   EPI_HRING  backward v1: the forward's pipeline (4 stages, 32 KiB epilogue tile, two passes)
//              with h as two more ring slots per tile after its k-blocks (slot = h's 128 rows x
//              128 columns of one pass, 32 KiB of the 48): h arrives with the ring's lookahead
//              (3 slots), nothing waits for the output stores but the epilogue tile itself (as
//              forward), and the producer never blocks on anything but the ring. With
//              OPT_PREFETCH, at the tile's first k-block the producer also prefetches the tile's h
//              into L2 (cp.async.bulk.prefetch), ~8 slots before its ring loads, so those hit L2.
//   EPI_HSTASH backward v5: the epilogue under the next tile's products. At the end of a tile's
//              mainloop the accumulators go to a 64 KiB stash tile as bf16 (the forward's cost: a
//              convert and a store each), and the next tile's products start at once; the gradient
//              factor is applied to the stash in 8 parts (4 chunks of 64 columns, halved), each right
//              after one of the next tile's k-blocks has been issued, so its square roots and loads
//              run while the tensor cores do that k-block (wgmma is asynchronous: the warps go on until they
//              wait). Each chunk's h (128 rows x 64 columns) comes into a 16 KiB buffer of its own
//              (h full / h empty), then the chunk is TMA-stored from the stash. 3 stages (the
//              stash and the h buffer take the fourth's room). Two roundings, as the unfused path:
//              the product rounded to bf16 in the stash, then 2 sqrt(h) d rounded again (the same
//              numbers as cuBLASLt + relu2_backward_from_out given the same bf16 product).
//   EPI_PLAIN  the grouped GEMMs (below: matmul_forward_grouped, matmul_backward_dinp_grouped):
//              the forward's pipeline, the accumulator rounded to bf16 as it is; the operands in
//              up to 3 groups (Operands), each k-block and n-tile finding its group's TMA maps.
//   EPI_HSIDE  backward v8: the stash of EPI_HSTASH, but the epilogue done by the producer
//              warpgroup's three idle warps (hside_epilogues), so the consumers' only epilogue
//              work is the stash (the forward's cost). Measured slower: three warps, one per
//              scheduler, need ~14 us a tile where the mainloop takes ~6.6 (see below).
//   EPI_QK     the grouped forward of q, k, v (matmul_forward_qkv_norm) with the q and k groups
//              leaving through their per-head RMSNorm, RoPE and gain (qk_epilogue below).
// Options (OPT bits, backward only): OPT_SQRT_SEL: sqrtf runs on h > 0 ? h : 1 (the product still
// takes 0 where h <= 0): ptxas's sqrt.rn.f32 leaves its fast path (MUFU.RSQ and a correction) for
// zero, denormal, huge and non-finite inputs, so a zero h (half of them) takes a divergent slow
// call in nearly every warp. Even so, `h > 0 ? 2 sqrtf(h) acc : 0` compiles to a branch region
// per element (BSSY/BRA/BSYNC around the square root, which the compiler will not speculate: a
// call inside), 128 of them per thread in sequence, each exposing its MUFU and shared-load
// latency. OPT_SQRT_FAST: sqrt_rn (below), computed for every element and then selected: plain
// arithmetic, no branch, so the epilogue's loads and square roots overlap. (A first sqrt_rn with
// rsqrt.approx in inline asm was not speculated either and measured 510 us.)
// OPT_PREFETCH (EPI_HRING): the L2 prefetch of h above.
// Variants 0..4 compute v = h > 0 ? 2 sqrtf(h) acc : 0, rounded once to bf16: the same numbers;
// variant 5 (EPI_HSTASH) rounds acc to bf16 first (bwd_roundings). OPT_RSQ (variants 6, 7): the
// factor from one rsqrt.approx (two_sqrt_rsq: ~4 instructions against sqrt_rn's ~11, relative
// error below 2^-21, then the one rounding to bf16), ~10 instructions an element in all instead of
// ~20; a warp whose pass (part) meets a denormal or infinite h does it again with sqrt_rn.
// The backward variants (the `variant` argument of the launchers below; dev_matmul checks and
// benchmarks each, with B N-major and K-major; H200, seed shape 98304 x 512 -> 1536, us, N-major /
// K-major B, dev_matmul --relu2-only, 2026-12-01; same run: cuBLASLt + pass 423.9; the forward
// 235.8 in an earlier run):
//   0  EPI_HTILE                               593.0 / 592.6  the original
//   1  EPI_HRING  OPT_SQRT_FAST | OPT_PREFETCH 377.5 / 377.2  (the default until 2026-12-02)
//   2  EPI_HRING  OPT_SQRT_SEL | OPT_PREFETCH  435.1 / 440.4
//   3  EPI_HRING  OPT_PREFETCH                 551.1 / 551.6  (the ring, plain sqrtf)
//   4  EPI_HTILE  OPT_SQRT_FAST                398.7 / 398.1  (the original pipeline, sqrt_rn)
//   5  EPI_HSTASH OPT_SQRT_FAST | OPT_PREFETCH 388.0 / 395.8  (2026-12-02, same run: v1 380.5 / 381.7)
//   6  EPI_HRING  OPT_RSQ | OPT_PREFETCH       343.0 / 343.5  the default (2026-12-02, same run: v1 393.9 / 388.0)
//   7  EPI_HSTASH OPT_RSQ | OPT_PREFETCH       354.4 / 354.3  (same run; rounds twice, as variant 5)
//   8  EPI_HSIDE  OPT_RSQ | OPT_PREFETCH       516.5 / 514.6  (2026-12-03, same run: v6 324.0 / 334.5; rounds twice)
//   9  pingpong_gemm_kernel<PP_DRELU2>         -     / 337.4  (2026-12-03, same run: v6 327.6 K-major; W^T only,
//                                                             K <= 512; another run 332.9 against 325.9)
// (an earlier run: EPI_HRING with the select and no prefetch 443.6 / 443.3, i.e. the prefetch buys
// ~4 us; the original with the select 473.2 / 474.8). B's major-ness changes nothing measurable.
// The epilogue is what separates the backward from the forward: it runs while the tensor cores
// idle (both consumer warpgroups are in it), so its per-element instruction count and latency
// chain show up whole in the total.
// Tried and measured (2026-12-02, H200, not kept): a ping-pong schedule (tiles of 64 rows x 256
// columns, the two consumer warpgroups taking turns, one's epilogue under the other's mainloop,
// "order" mbarriers so a warpgroup never waits on a ring slot two phases ahead). Forward 265.7 us
// against 230.1 cooperative, backward 610 against 381: a 64-row tile loads 40 KiB per k-block
// for half the products (1.67x the bytes a flop: ~11 TB/s from L2, its limit), and in the
// backward the h passes hold 2 of the 4 ring slots while the other warpgroup's mainloop needs them.
// Variant 5 (EPI_HSTASH, 2026-12-02, H200, dev_matmul --relu2-only, N-major / K-major B, us; v1
// 378-382 in each run): 4 chunks of one part each 400.5 / 403.1; 8 parts of 16 elements a thread
// 405.5 / 411.2 as unrolled code copies, and in the shipping form (one code copy in a loop, the
// stash refilled box by box) 396.2 / 412.7 and 398.8 / 399.6; 16 parts 467.0 / 470.0 (unrolled
// code copies) and 430.1 / 429.1 (one copy); the results stored to global memory from registers
// instead of the stash + TMA store 437.4 / 439.4; the shipping form with sqrt_fast (below: 5 instead
// of ~11 instructions a square root where no h of the warp is tiny or infinite) 388.0 / 395.8. In
// 12-step training runs (RELU2_BWD=5 against the default, same binary, four calls) +0.3 to +2.0
// ms a step. So moving the epilogue's instructions under the products buys nothing here. ncu (seed
// shape + 77 rows, K-major B, clocks locked by ncu; forward / v1 / v5): 292 / 490 / 487 us, tensor
// pipe active 76.2 / 43.5 / 44.8%, shared-memory (LSU) pipe 54.5 / 33.2 / 39.8% of peak, issue
// active 22.4 / 40.2 / 51.9%, warp cycles per issued instruction 10.0 / 5.6 / 4.3. Not the shared
// memory then (as far as the LSU counters see: the wgmma operand reads may not be in them). A
// reading, not measured: a consumer warp needs ~400 instructions for a part at ~4.3 cycles each,
// ~1700 cycles, longer than the k-block's products (~1200 at the forward's rate), and the next
// k-block's wgmma waits for that warp; so the tensor pipe idles about as long as before, only in
// smaller pieces. Parts with fewer instructions (sqrt_fast, ~325 instead of ~400 a part) gained
// 8-11 us, in line with that reading but not enough; what is left to try: the producer
// warpgroup's 3 idle warps doing the parts, or sqrt_fast in v1's epilogue itself.
// Variant 8 (EPI_HSIDE, 2026-12-03, H200) is the first of those: 516.5 / 514.6 us (v6 324.0 /
// 334.5 in the same run); a first form with one 16 KiB h buffer (an h chunk loaded only once the
// previous one was done) 531.5 / 528.8; 12-step training runs 500.55 / 500.18 against the
// default's 491.97 / 490.60 ms a step (same binary, same call). Probe builds (not in the repo)
// in one call: the side warps with no h loads (scaling by the stash itself) 390.3 / 380.9, with h
// loads but no math (the stash stored as it is) 266.6 / 265.7, variant 8 itself 509.7 / 511.2
// and 493.0 / 504.7 (v6 326-356). So the pipeline (stash, side stores, h loads) costs ~30 us over
// the forward, and the math is what the side warps cannot keep up with: 3 warps, one a
// scheduler, issue ~12 instructions an element with no other warp to hide their latency (~14 us a
// tile against the mainloop's ~6.6). More side warps are not possible with these tiles: a
// fourth warpgroup (512 threads, 128 registers each at launch) fails in ptxas (C7602: the
// m64n256 wgmma needs a register target of at least 154).
namespace mlpg {

constexpr int BM = 128, BN = 256, BK = 64, THREADS = 384;
constexpr uint32_t A_BYTES = BM * BK * 2;      // 16 KiB: 128 rows of 128 bytes
constexpr uint32_t B_BOX_BYTES = 64 * BK * 2;  // 8 KiB: one box of 64 B rows (K-major) / 64 k rows (N-major)
constexpr uint32_t STAGE_BYTES = A_BYTES + 4 * B_BOX_BYTES;
constexpr uint32_t E_BOX_BYTES = BM * 64 * 2;  // the epilogue tile's boxes: 128 rows x 64 columns (16 KiB)
enum { EPI_FWD = 0, EPI_HTILE = 1, EPI_HRING = 2, EPI_PLAIN = 3, EPI_HSTASH = 4, EPI_QK = 5, EPI_HSIDE = 6 };
enum { OPT_SQRT_SEL = 1, OPT_PREFETCH = 2, OPT_SQRT_FAST = 4, OPT_RSQ = 8 };
constexpr int BWD_VARIANTS = 10;  // the table above
constexpr int BWD_DEFAULT = 6;   // fastest measured; dev_matmul --relu2-only benchmarks them all
// roundings to bf16 between the fp32 product and the output of backward variant v (dev_matmul's
// tolerance: one unit roundoff each)
__host__ __device__ constexpr int bwd_roundings(int v) { return v == 5 || v == 7 || v == 8 ? 2 : 1; }
// variants that take W^T only (matmul_relu2_backward_dx_wt)
__host__ __device__ constexpr bool bwd_needs_wt(int v) { return v == 9; }
// EPI_HSTASH: a tile's epilogue in HCHUNKS chunks of 64 columns (one h box each), each in HPARTS
// parts; part q (= c HPARTS + p) of the previous tile's epilogue runs after k-block
// part_kblock(q) of the current tile has been issued: spread over the tile's kb k-blocks, so that
// a part's instructions take less time than a k-block's products (at kb = 8 a part is 16
// elements a thread). The producer loads chunk c's h after k-block part_kblock(c HPARTS).
constexpr int HCHUNKS = 4, HPARTS = 2;
__host__ __device__ constexpr int part_kblock(int q, int kb) { return q * kb / (HCHUNKS * HPARTS); }
// the first part that runs after k-block k (or later): the parts of k-block k are
// part_begin(k) .. part_begin(k + 1) - 1
__host__ __device__ constexpr int part_begin(int k, int kb) { return (k * HCHUNKS * HPARTS + kb - 1) / kb; }
// a whole-tile (256-column) epilogue tile: the HTILE / stash pipelines (3 ring stages: the tile takes the fourth's room)
template <int EPI> __host__ __device__ constexpr bool whole_tile() { return EPI == EPI_HTILE || EPI == EPI_HSTASH || EPI == EPI_HSIDE; }
template <int EPI> __host__ __device__ constexpr int stages() { return whole_tile<EPI>() ? 3 : 4; }
template <int EPI> __host__ __device__ constexpr int epi_cols() { return whole_tile<EPI>() ? 256 : 128; }
template <int EPI> __host__ __device__ constexpr int h_slots() { return EPI == EPI_HRING ? 256 / epi_cols<EPI>() : 0; }
template <int EPI> __host__ __device__ constexpr uint32_t off_e() { return stages<EPI>() * STAGE_BYTES; }
// EPI_HSTASH, EPI_HSIDE: the h chunk buffer (one box) after the stash tile
template <int EPI> __host__ __device__ constexpr uint32_t off_h() { return off_e<EPI>() + epi_cols<EPI>() / 64 * E_BOX_BYTES; }
template <int EPI> __host__ __device__ constexpr uint32_t off_bar() {
    return off_h<EPI>() + (EPI == EPI_HSTASH || EPI == EPI_HSIDE ? E_BOX_BYTES : 0);
}
// full[stages], empty[stages], then (EPI_HTILE, EPI_HSTASH, EPI_HSIDE) e full, e empty, (EPI_HSIDE)
// s full, h full 1; + the slack to align the base to 1024
template <int EPI> __host__ __device__ constexpr size_t smem_bytes() {
    return off_bar<EPI>() + 2 * stages<EPI>() * 8 + (EPI == EPI_HSIDE ? 32 : 16) + 1024;
}
static_assert(smem_bytes<EPI_FWD>() <= 227 * 1024 && smem_bytes<EPI_HTILE>() <= 227 * 1024 && smem_bytes<EPI_HRING>() <= 227 * 1024 &&
                  smem_bytes<EPI_HSTASH>() <= 227 * 1024 && smem_bytes<EPI_HSIDE>() <= 227 * 1024,
              "the ring fits in shared memory");
static_assert(STAGE_BYTES % 1024 == 0 && A_BYTES % 1024 == 0, "TMA / wgmma tiles are 1024-byte aligned");
static_assert(2 * E_BOX_BYTES <= STAGE_BYTES, "an h pass (128 rows x 128 columns) fits in a ring slot");

// A launch's operands as TMA maps, in up to MAXG groups concatenated along N or along K (never
// both). Along N (matmul_forward_grouped): one A, group g has its own B_g and output out_g, the
// n-tiles of group g following those of g - 1 (the q, k, v projections of one input). Along K
// (matmul_backward_dinp_grouped): group g has its own A_g and B_g and its k-blocks follow those
// of g - 1, into one output (the sum of q, k, v's input gradients). One group: a plain GEMM, the
// relu^2 kernels' case (a[0], b[0], out[0], h). Unused groups repeat the last group's ends.
constexpr int MAXG = 3;
// EPI_QK: the first nnorm groups (q, then k) are heads of 64 columns, each normalized by its RMS
// over the head (xn = x / sqrt(mean(x^2) + eps), rounded to bf16 as the backward stores it), its
// first QK_RD dims rotated (RoPE of the rounded xn, tables (T, QK_RD / 2) at the row's position
// t = row % T) and scaled by the head's gain (bf16-rounded; none: 1): out_g. The same operations
// as qk_norm_rope_gain_forward (layers.cuh) on x = the fp32 product instead of its bf16 rounding.
constexpr int QK_RD = 16;  // the rotated dims the epilogue supports (ROPE_DIMS' default)
struct QkEpilogue {
    CUtensorMap xn[2];             // group g's xn (M, n_g), written when store_xn
    float *rstd[2];                // (M, n_g / 64): 1 / rms per row and head, or null
    const float *gain[2];          // per head, or null
    const float *cos_t, *sin_t;    // (T, QK_RD / 2)
    float eps;
    int T, nnorm, store_xn;
};
struct Operands {
    CUtensorMap a[MAXG], b[MAXG], out[MAXG], h;
    int k_end[MAXG];   // k-blocks up to the end of group g (along K; else all at K / 64)
    int n_end[MAXG];   // n-tiles (of 256 columns) up to the end of group g (along N; else all at the total)
    int n_cols[MAXG];  // group g's output columns (its last n-tile may be partial)
    QkEpilogue qk;     // EPI_QK only
};
// group of index i (a k-block or an n-tile) given the groups' cumulative ends, and i's offset in it
__device__ __forceinline__ int group_of(const int (&end)[MAXG], int i, int &local) {
    int g = 0;
    while (g < MAXG - 1 && i >= end[g]) g++;
    local = i - (g ? end[g - 1] : 0);
    return g;
}

using namespace sm90;

// sqrtf(x) for x > 0 without a branch: rsqrt.approx, then one Newton-style correction of
// y = x r (the fast path of ptxas's sqrt.rn.f32), with x below 2^-64 scaled by 2^64 first (and
// the root by 2^-32 after) and +inf passed through. Bitwise equal to sqrtf for every positive
// bf16 (dev_matmul checks all of them each run; the same sequence with rsqrt.approx.ftz, equal for
// these normal xs, matched sqrtf on all 2^31 positive floats on an H200);
// x <= 0 or NaN give garbage (the callers select 0 there).
__device__ __forceinline__ float sqrt_rn(float x) {
    const bool tiny = x < 0x1p-64f;
    const float xs = tiny ? x * 0x1p64f : x;
    const float r = rsqrtf(xs);  // rsqrt.approx.f32 (MUFU.RSQ): an intrinsic, so the compiler may speculate it
    const float y = xs * r, e = fmaf(-y, y, xs), s = fmaf(e, 0.5f * r, y);
    return x == __int_as_float(0x7f800000) ? x : tiny ? s * 0x1p-32f : s;
}

// sqrt_rn's fast path alone: equal to it (bitwise) for 2^-64 <= x < inf, garbage for other
// positive x (sqrt_special says which); half the instructions. The callers check a warp's inputs
// once (sqrt_special, __any_sync) and take sqrt_rn where any is special.
__device__ __forceinline__ float sqrt_fast(float x) {
    float r;  // rsqrt.approx.ftz: x is normal here, and rsqrtf's denormal scaling would cost 3 more instructions
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    const float y = x * r, e = fmaf(-y, y, x);
    return fmaf(e, 0.5f * r, y);
}
__device__ __forceinline__ bool sqrt_special(float x) {  // (& and |, not && and ||: no branches)
    return (x > 0.f) & ((x < 0x1p-64f) | (x == __int_as_float(0x7f800000)));
}

// The backward's factor 2 sqrt(h) from one rsqrt.approx: 2 h rsqrt(h), 4 instructions (sqrt_rn
// takes ~11). Not correctly rounded: relative error below 2^-21 for normal h (dev_matmul measures
// it on every positive bf16), far inside the one bf16 rounding that follows. 0 for h <= 0 (h = 0:
// 0 * inf = NaN, selected away). Outside its range it says so rather than answer wrong: a
// denormal h (which rsqrt.approx.ftz reads as 0) gives +inf, h = +inf gives NaN, so a caller that
// sees !(f < inf) takes sqrt_rn instead (variant 6 redoes the warp's pass).
__device__ __forceinline__ float two_sqrt_rsq(float h) {
    float r;
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(h));
    const float s = h * r;  // (no .ftz: a denormal h times +inf is +inf, not NaN)
#ifdef BREAK_RSQ_FLAG  // a deliberately wrong variant (dev/broken_variants.sh): a denormal h gives a finite (wrong) factor, unflagged
    return h > 0.f ? fminf(s + s, 0x1p127f) : 0.f;
#endif
    return h > 0.f ? s + s : 0.f;
}
// The relu^2 backward's factor on two accumulator values v0, v1 given their h pair hv2 (bf16
// bits), in place: v * 2 sqrt(h), 0 where h <= 0. RSQ: two_sqrt_rsq from the halves' bits (one
// instruction each), flagging (NaN or +inf: & and |, no branches) an h it does not cover, whose
// warp then redoes its pass with RSQ false; else sqrt_rn, computed for every h and then
// selected (no branch per element).
template <bool RSQ>
__device__ __forceinline__ void drelu2_scale(float &v0, float &v1, uint32_t hv2, bool &flagged) {
    if (RSQ) {
        const float f0 = two_sqrt_rsq(__uint_as_float(hv2 << 16)), f1 = two_sqrt_rsq(__uint_as_float(hv2 & 0xffff0000u));
        flagged |= !(f0 < INFINITY) | !(f1 < INFINITY);
        v0 *= f0;
        v1 *= f1;
    } else {
        const float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&hv2));
        const float s0 = 2.f * sqrt_rn(hv.x) * v0, s1 = 2.f * sqrt_rn(hv.y) * v1;
        v0 = hv.x > 0.f ? s0 : 0.f;
        v1 = hv.y > 0.f ? s1 : 0.f;
    }
}

// Where this thread's two accumulator columns of n8 tile j (0..7) of row r sit in an epilogue box
// (128 rows x 64 columns, 128-byte rows whose 16-byte chunk c is stored at c ^ (r % 8)), in bytes;
// r % 8 = lane / 4 for every row a thread holds
__device__ __forceinline__ uint32_t epi_off(int r, int j, int lane) { return r * 128 + ((j ^ (lane / 4)) << 4) + (lane % 4) * 4; }

// TMA: prefetch the box at (c0, c1) of a 2-D tensor map into L2 (no shared memory, no barrier)
__device__ __forceinline__ void tma_prefetch_2d(const void *tmap, int c0, int c1) {
    asm volatile("cp.async.bulk.prefetch.tensor.2d.L2.global.tile [%0, {%1, %2}];\n" ::"l"(tmap), "r"(c0), "r"(c1) : "memory");
}
// D (64 x 256 fp32: 128 registers, the n8 tile j in d[4j .. 4j + 3]) (+)= A B; A K-major, B
// K-major (TB = 0) or N-major (TB = 1); accumulate = 0 overwrites D.
template <int TB>
__device__ __forceinline__ void wgmma_m64n256k16_ss(float (&d)[128], uint64_t da, uint64_t db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, %131;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(accumulate), "n"(TB));
#endif
}

// The end of an epilogue round (qk_epilogue_pass): this warpgroup's st.shared of the box are
// made visible to the TMA, thread 0 waits until every store it issued before has read its box (the
// box the next round writes was read by the one before last), the warpgroup meets, and thread 0
// stores the box (64 rows x 64 columns at (col, row0); none past M)
__device__ __forceinline__ void epi_round_end(const CUtensorMap *m, uint32_t box, int col, int row0, int M, int bar, int t) {
    fence_proxy_async();
    if (t == 0) bulk_wait_read<0>();
    named_bar_sync(bar, 128);
    if (t == 0) {
        if (row0 < M) tma_store_2d(m, box, col, row0);
        bulk_commit();
    }
}
// EPI_QK's epilogue, one pass: 2 heads (128 columns from col0, heads head0, head0 + 1 of the
// group's `heads`) of 64 rows of this warpgroup (from global row row0; this thread's rows row0 +
// rl and + 8), acc the pass's 16 n8 tiles in the wgmma layout (element 4j + 2i + e at row rl +
// 8i, column 8j + 2 (lane % 4) + e). A head-row's 64 values sit in the 4 lanes of a quad (16
// each), so its sum of squares is the lane's sum plus two shuffles; the RoPE partner of dim i < 8
// (n8 tile 0 of the head) is dim i + 8 (tile 1): the same lane. cs, sn: the RoPE tables at this
// thread's two rows. Writes xn (when wanted), then out, a head at a time (a round) through the
// warpgroup's two epilogue boxes (64 rows of 128 bytes, at sbox and sbox + box_stride) in turn,
// each round's box TMA-stored at its end. Round rr (this warpgroup's count, carried by the
// caller) writes box rr % 2, which the store of round rr - 2 read: thread 0 waits for the stores
// before the one it is about to issue (so for round rr - 1's and older) and then the warpgroup
// meets once (named barrier `bar`), so a round costs one barrier and its store reads while the
// next round computes. Both forms of the q, k, v GEMM run it (qk_epilogue, the ping-pong kernel).
__device__ __forceinline__ void qk_epilogue_pass(const QkEpilogue &qe, int g, const float *acc, int head0, int heads,
                                                 const float2 (&cs)[2], const float2 (&sn)[2], uint32_t sbox,
                                                 uint32_t box_stride, const CUtensorMap *mo, int col0, int row0, int M, int rl,
                                                 int bar, int t, int lane, int &rr) {
    float rs[2][2], gh[2];  // 1 / rms per head of the pass and row; the heads' gains
#pragma unroll
    for (int hp = 0; hp < 2; hp++) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float s2 = 0.f;
#pragma unroll
            for (int jj = 0; jj < 8; jj++) {
                const int j = 8 * hp + jj;
                s2 = __fmaf_rn(acc[4 * j + 2 * i], acc[4 * j + 2 * i], s2);
                s2 = __fmaf_rn(acc[4 * j + 2 * i + 1], acc[4 * j + 2 * i + 1], s2);
            }
            s2 = __fadd_rn(s2, __shfl_xor_sync(0xffffffffu, s2, 1));  // (a + b) + (c + d): the same bits in all 4 lanes
            s2 = __fadd_rn(s2, __shfl_xor_sync(0xffffffffu, s2, 2));
            rs[hp][i] = rsqrtf(__fadd_rn(__fdiv_rn(s2, 64.f), qe.eps));
        }
        const int h = min(head0 + hp, heads - 1);
#ifdef BREAK_QK_EPI  // a deliberately wrong variant (dev/broken_variants.sh): a pass's second head takes the first one's gain
        gh[hp] = qe.gain[g] ? lyr::rnd(qe.gain[g][head0]) : 1.f;
        continue;
#endif
        gh[hp] = qe.gain[g] ? lyr::rnd(qe.gain[g][h]) : 1.f;
    }
    if (qe.rstd[g] && lane % 4 == 0)
#pragma unroll
        for (int hp = 0; hp < 2; hp++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int row = row0 + rl + 8 * i;
                if (row < M && head0 + hp < heads) qe.rstd[g][(size_t)row * heads + head0 + hp] = rs[hp][i];
            }
    for (int sub = qe.store_xn ? 0 : 1; sub < 2; sub++)  // 0: xn, 1: out
#pragma unroll
        for (int hp = 0; hp < 2; hp++) {
            if (head0 + hp >= heads) break;  // (uniform) a partial last block
            const uint32_t box = sbox + (rr & 1) * box_stride;
#pragma unroll
            for (int jj = 0; jj < 8; jj++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int j = 8 * hp + jj;
                    const float r = rs[hp][i];
                    float y0 = lyr::rnd(__fmul_rn(acc[4 * j + 2 * i], r)), y1 = lyr::rnd(__fmul_rn(acc[4 * j + 2 * i + 1], r));
                    if (sub == 1) {
                        if (jj < QK_RD / 8) {  // rotated: the partner is tile 1 - jj of the head
                            const int jq = 8 * hp + (1 - jj);
                            const float p0 = lyr::rnd(__fmul_rn(acc[4 * jq + 2 * i], r)), p1 = lyr::rnd(__fmul_rn(acc[4 * jq + 2 * i + 1], r));
                            if (jj == 0) y0 = qk_rot_lo(y0, p0, cs[i].x, sn[i].x), y1 = qk_rot_lo(y1, p1, cs[i].y, sn[i].y);
                            else y0 = qk_rot_hi(y0, p0, cs[i].x, sn[i].x), y1 = qk_rot_hi(y1, p1, cs[i].y, sn[i].y);
                        }
                        y0 = __fmul_rn(gh[hp], y0);
                        y1 = __fmul_rn(gh[hp], y1);
                    }
                    const __nv_bfloat162 o = __floats2bfloat162_rn(y0, y1);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(box + epi_off(rl + 8 * i, jj, lane)),
                                 "r"(*reinterpret_cast<const uint32_t *>(&o))
                                 : "memory");
                }
            epi_round_end(sub ? mo : &qe.xn[g], box, col0 + 64 * hp, row0, M, bar, t);
            rr++;
        }
}
// the RoPE tables at this thread's rows `row` and row + 8 (dims 2 (lane % 4) + e)
__device__ __forceinline__ void qk_rope_rows(const QkEpilogue &qe, int row, int lane, float2 (&cs)[2], float2 (&sn)[2]) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const size_t at = (size_t)((row + 8 * i) % qe.T) * (QK_RD / 2) + 2 * (lane % 4);
        cs[i] = *reinterpret_cast<const float2 *>(qe.cos_t + at);
        sn[i] = *reinterpret_cast<const float2 *>(qe.sin_t + at);
    }
}
// EPI_QK's epilogue of a q or k tile of the 128 x 256 kernel (group g: 64 rows of this consumer
// warpgroup x up to 256 columns = 4 heads): two passes of 128 columns (2 heads) through the 32 KiB
// epilogue tile, whose boxes hold 128 rows (this warpgroup's 64 from row 64 cw), once the
// tile's previous stores (e.g. a v tile's, which fill both boxes) have read it
__device__ __forceinline__ void qk_epilogue(const QkEpilogue &qe, int g, const float (&acc)[128], uint32_t se,
                                            const CUtensorMap *mo, int m0, int n0, int N, int M, int r0, int cw, int t,
                                            int lane) {
    const int heads = N / 64;
    float2 cs[2], sn[2];
    qk_rope_rows(qe, m0 + r0, lane, cs, sn);
    if (t == 0) bulk_wait_read<0>();  // the epilogue tile is free once this warpgroup's previous stores have read it
    named_bar_sync(1 + cw, 128);
    int rr = 0;
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int head0 = n0 / 64 + 2 * p;  // the pass's first head in the group
        if (head0 >= heads) break;          // (uniform) a partial last n-tile
        qk_epilogue_pass(qe, g, acc + 64 * p, head0, heads, cs, sn, se + cw * (64 * 128), E_BOX_BYTES, mo, n0 + 128 * p,
                         m0 + 64 * cw, M, r0 - 64 * cw, 1 + cw, t, lane, rr);
    }
}

// EPI_HSIDE (backward variant 8): the epilogue of every tile by the producer warpgroup's three
// idle warps (96 threads, 56 registers), so the consumers leave the tensor cores only to stash
// their products as bf16 (the forward's epilogue cost) and start the next tile. For each tile of
// this CTA, in the consumers' order: wait for the stash (s full); per chunk of 64 columns and each
// of its two 64-row halves, that half's h (64 x 64, TMA) is in one of two 8 KiB buffers, every
// thread scales its 16-byte units of the half (unit u: the same bytes of the h half and of the
// stash's, both in TMA's 128-byte swizzle, so no offsets are computed) by 2 sqrt(h)
// (two_sqrt_rsq; a pair of units with a flagged h again with sqrt_rn, per thread), back into the
// stash; then thread 0 TMA-stores the half and loads the next chunk's h for the same half into
// the buffer just read (so each load has a half's work to land). Once a tile's stores have read
// the stash, e empty frees it for the next tile. Rounds twice (the stashed product, then the
// result), as variant 7.
__device__ __forceinline__ uint32_t hside_scale(uint32_t h2, uint32_t d2, bool &flagged) {
    const float f0 = two_sqrt_rsq(__uint_as_float(h2 << 16)), f1 = two_sqrt_rsq(__uint_as_float(h2 & 0xffff0000u));
    flagged |= !(f0 < INFINITY) | !(f1 < INFINITY);
    const __nv_bfloat162 o = __floats2bfloat162_rn(f0 * __uint_as_float(d2 << 16), f1 * __uint_as_float(d2 & 0xffff0000u));
    return *reinterpret_cast<const uint32_t *>(&o);
}
__device__ __forceinline__ uint32_t hside_scale_rn(uint32_t h2, uint32_t d2) {  // sqrt_rn: any h
    const float h0 = __uint_as_float(h2 << 16), h1 = __uint_as_float(h2 & 0xffff0000u);
    const float s0 = 2.f * sqrt_rn(h0) * __uint_as_float(d2 << 16), s1 = 2.f * sqrt_rn(h1) * __uint_as_float(d2 & 0xffff0000u);
    const __nv_bfloat162 o = __floats2bfloat162_rn(h0 > 0.f ? s0 : 0.f, h1 > 0.f ? s1 : 0.f);
    return *reinterpret_cast<const uint32_t *>(&o);
}
__device__ __forceinline__ void ld_shared_v4(uint32_t (&x)[4], uint32_t a) {
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3]) : "r"(a) : "memory");
}
__device__ __forceinline__ void st_shared_v4(uint32_t a, const uint32_t (&x)[4]) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(x[0]), "r"(x[1]), "r"(x[2]), "r"(x[3]) : "memory");
}
// h_full0 / h_full1: the two h buffers' barriers
__device__ __forceinline__ void hside_epilogues(const Operands &op, int M, int tiles, int n_tiles, int st, uint32_t se, uint32_t shb,
                                                uint32_t h_full0, uint32_t h_full1, uint32_t s_empty, uint32_t s_full) {
    constexpr int SIDE = 96, HALF = E_BOX_BYTES / 2, UNITS = HALF / 16;  // threads; a half box's bytes, 16-byte units
#ifdef BREAK_HSIDE  // a deliberately wrong variant (dev/broken_variants.sh): a half's last 4 rows keep the raw product
    constexpr int UNITS_DONE = UNITS - 32;
#else
    constexpr int UNITS_DONE = UNITS;
#endif
    const int N = op.n_cols[0];
    auto h_full = [&](int half) { return half ? h_full1 : h_full0; };
    auto nbox_of = [&](int tile) { return min(4, (N - tile % n_tiles * BN) / 64); };
    // h of (tile, chunk c, half) into buffer `half` (no bytes for a half past M or a tile past the end)
    auto load_h = [&](int tile, int c, int half) {
        if (st != 0 || tile >= tiles) return;
        const int row = tile / n_tiles * BM + 64 * half;
        mbar_arrive_expect_tx(h_full(half), row < M ? HALF : 0);
        if (row < M) tma_load_2d(shb + half * HALF, &op.h, h_full(half), tile % n_tiles * BN + 64 * c, row);
    };
    load_h(blockIdx.x, 0, 0);
    load_h(blockIdx.x, 0, 1);
    int hc = 0, ti = 0;  // chunks done (each buffer's phase); tiles done
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ti++) {
        const int m0 = tile / n_tiles * BM, n0 = tile % n_tiles * BN, nbox = nbox_of(tile);
        mbar_wait(s_full, ti & 1);
        for (int c = 0; c < nbox; c++, hc++) {
            // the chunk after this one in this CTA's order: its h follows each half into the buffer
            const bool last = c + 1 == nbox;
            const int ntile = last ? tile + gridDim.x : tile, nc = last ? 0 : c + 1;
            for (int half = 0; half < 2; half++) {
                mbar_wait(h_full(half), hc & 1);
                const uint32_t sh = shb + half * HALF, sd = se + c * E_BOX_BYTES + half * HALF;
                // two units a step, their loads first; a flagged pair again with sqrt_rn
#pragma unroll 1
                for (int u = st; u < UNITS_DONE; u += 2 * SIDE) {
                    const bool two = u + SIDE < UNITS_DONE;
                    uint32_t h0[4], d0[4], h1[4] = {0, 0, 0, 0}, d1[4] = {0, 0, 0, 0}, o0[4], o1[4];
                    ld_shared_v4(h0, sh + 16 * u);
                    ld_shared_v4(d0, sd + 16 * u);
                    if (two) {
                        ld_shared_v4(h1, sh + 16 * (u + SIDE));
                        ld_shared_v4(d1, sd + 16 * (u + SIDE));
                    }
                    bool flagged = false;
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        o0[e] = hside_scale(h0[e], d0[e], flagged);
                        o1[e] = hside_scale(h1[e], d1[e], flagged);
                    }
                    if (flagged) {
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            o0[e] = hside_scale_rn(h0[e], d0[e]);
                            o1[e] = hside_scale_rn(h1[e], d1[e]);
                        }
                    }
                    st_shared_v4(sd + 16 * u, o0);
                    if (two) st_shared_v4(sd + 16 * (u + SIDE), o1);
                }
                fence_proxy_async();  // the stores above -> visible to the TMA
                named_bar_sync(3, SIDE);  // every thread is through with the h buffer and the stash half
                if (st == 0) {
                    if (m0 + 64 * half < M) tma_store_2d(&op.out[0], sd, n0 + 64 * c, m0 + 64 * half);
                    bulk_commit();
                }
                load_h(ntile, nc, half);
            }
        }
        if (st == 0) {  // the stash is free once the stores have read it
            bulk_wait_read<0>();
            mbar_arrive(s_empty);
        }
    }
    if (st == 0) bulk_wait_all();
}

template <int EPI, bool BNM, int OPT>
__global__ void __launch_bounds__(THREADS, 1)
    mlp_relu2_gemm_kernel(const __grid_constant__ Operands op, int M) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr bool HTILE = EPI == EPI_HTILE, HRING = EPI == EPI_HRING, HSTASH = EPI == EPI_HSTASH, HSIDE = EPI == EPI_HSIDE,
                   BWD = HTILE || HRING || HSTASH || HSIDE,
                   QK = EPI == EPI_QK, PLAIN = EPI == EPI_PLAIN || QK;
    constexpr int STAGES = stages<EPI>(), EC = epi_cols<EPI>(), HS = h_slots<EPI>();
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int tid = threadIdx.x;
    // the warpgroup through a shuffle: provably warp-uniform, so ptxas gives the producer and the
    // consumer branches their own register counts (setmaxnreg)
    const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int n_tiles = op.n_end[MAXG - 1], tiles = (M + BM - 1) / BM * n_tiles, kb = op.k_end[MAXG - 1];
    // tile t's n-tile nt: its group (EPI_PLAIN; the others have one), the columns N of that group
    // and its first column n0 there
    auto tile_n = [&](int nt, int &n0, int &N) {
        int local = nt;
        const int g = PLAIN ? group_of(op.n_end, nt, local) : 0;
        n0 = local * BN;
        N = op.n_cols[g];
        return g;
    };
    auto full = [&](int s) { return base + off_bar<EPI>() + 8 * s; };
    auto empty = [&](int s) { return base + off_bar<EPI>() + 8 * (STAGES + s); };
    // EPI_HTILE: the epilogue tile holds h (e full: loaded; e empty: the previous tile's output
    // stores have read it, one arrival per consumer warpgroup). EPI_HSTASH: the h buffer (e full:
    // a chunk's h loaded; e empty: every consumer thread has read it). EPI_HSIDE: e empty: the
    // stash is free (the side warps' stores of the tile have read it); s full: the consumers have
    // stashed a tile's products (256 arrivals); h full 0 / 1 (e full and the one after s full):
    // an h half loaded into buffer 0 / 1
    const uint32_t e_full = base + off_bar<EPI>() + 16 * STAGES, e_empty = e_full + 8, s_full = e_full + 16,
                   se = base + off_e<EPI>(), shb = base + off_h<EPI>();
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(full(s), 1);
            mbar_init(empty(s), 256);
        }
        mbar_init(e_full, 1);
        mbar_init(e_empty, HSTASH ? 256 : HSIDE ? 1 : 2);
        if (HSIDE) {
            mbar_init(s_full, 256);
            mbar_init(s_full + 8, 1);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {  // the producer: thread 0 issues every load; the other warps leave (EPI_HSIDE: do the epilogues)
        // (the launch holds 168 x 384 registers: 128 x 40 + 256 x 232 is all of them, and a
        // setmaxnreg.inc beyond them waits forever. EPI_HSIDE: 56 for the side warps, whose loop
        // spills at 48, and 224 for the consumers: 128 x 56 + 256 x 224, all of them again)
        setmaxnreg_dec<HSIDE ? 56 : 40>();
        if (HSIDE && tid >= 32) {
            hside_epilogues(op, M, tiles, n_tiles, tid - 32, se, shb, e_full, s_full + 8, e_empty, s_full);
            return;
        }
        if (tid != 0) return;
        int it = 0, ti = 0;
        // EPI_HSTASH: the h of chunk c of the tile at (pm0, pn0) (of pN columns) into the h buffer,
        // once the consumers have read the previous chunk (hc chunks so far); a chunk past N
        // completes the phase with no bytes
        int hc = 0, pm0 = 0, pn0 = 0, pN = 0;
        auto load_h_chunk = [&](int c) {
            if (hc > 0) mbar_wait(e_empty, (hc - 1) & 1);
            const bool in = pn0 + 64 * c < pN;
            mbar_arrive_expect_tx(e_full, in ? E_BOX_BYTES : 0);
            if (in) tma_load_2d(shb, &op.h, e_full, pn0 + 64 * c, pm0);
            hc++;
        };
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ti++) {
            const int m0 = tile / n_tiles * BM;
            int n0, N;
            const int gn = tile_n(tile % n_tiles, n0, N);
            const int nbox = min(4, (N - n0) / 64);  // B (and h) boxes inside N (the others are not loaded)
            if ((HRING || HSTASH || HSIDE) && (OPT & OPT_PREFETCH))  // h towards L2 now, ~8 ring slots (HSTASH, HSIDE: a tile) before its loads
                for (int j = 0; j < nbox; j++) {
                    tma_prefetch_2d(&op.h, n0 + 64 * j, m0);
                    if (HSIDE) tma_prefetch_2d(&op.h, n0 + 64 * j, m0 + 64);  // (its boxes are 64 rows)
                }
            for (int k = 0; k < kb + HS; k++, it++) {
                const int s = it % STAGES;
                if (it >= STAGES) mbar_wait(empty(s), (it / STAGES - 1) & 1);  // the consumers are done with it - STAGES
                const uint32_t sa = base + s * STAGE_BYTES, sb = sa + A_BYTES;
                if (HRING && k >= kb) {  // h of epilogue pass p: its (up to) 2 boxes of 128 rows x 64 columns
                    const int p = k - kb, nb = max(0, min(2, nbox - 2 * p));
                    mbar_arrive_expect_tx(full(s), nb * E_BOX_BYTES);  // 0 bytes (pass past N): the arrival completes it
                    for (int b = 0; b < nb; b++) tma_load_2d(sa + b * E_BOX_BYTES, &op.h, full(s), n0 + 128 * p + 64 * b, m0);
                    continue;
                }
                mbar_arrive_expect_tx(full(s), A_BYTES + nbox * B_BOX_BYTES);
                // k-block k: group gk's (along K; else group 0's) block kl; B of group gk + gn
                int kl = k;
                const int gk = PLAIN ? group_of(op.k_end, k, kl) : 0;
#ifdef BREAK_GROUPED_K  // a deliberately wrong variant (dev/broken_variants.sh): every k-block reads group 0's B
                const CUtensorMap *ma = &op.a[gk], *mb = &op.b[gn];
#else
                const CUtensorMap *ma = &op.a[gk], *mb = &op.b[gk + gn];
#endif
                tma_load_2d(sa, ma, full(s), kl * BK, m0);
                for (int j = 0; j < nbox; j++) {
                    if (BNM) tma_load_2d(sb + j * B_BOX_BYTES, mb, full(s), n0 + 64 * j, kl * BK);  // (k, n) box of W (K, N)
                    else tma_load_2d(sb + j * B_BOX_BYTES, mb, full(s), kl * BK, n0 + 64 * j);     // (n, k) box of W (N, K)
                }
                // EPI_HTILE: h of this tile into the epilogue tile, once the ring is primed and the
                // previous tile's output stores have read it
                if (HTILE && k == min(kb, STAGES) - 1) {
                    if (ti > 0) mbar_wait(e_empty, (ti - 1) & 1);
                    mbar_arrive_expect_tx(e_full, nbox * E_BOX_BYTES);
                    for (int j = 0; j < nbox; j++) tma_load_2d(se + j * E_BOX_BYTES, &op.h, e_full, n0 + 64 * j, m0);
                }
                // EPI_HSTASH: the previous tile's h chunks, in the order the consumers take them
                if (HSTASH && ti > 0)
#pragma unroll
                    for (int c = 0; c < HCHUNKS; c++)
                        if (part_kblock(c * HPARTS, kb) == k) load_h_chunk(c);
            }
            pm0 = m0, pn0 = n0, pN = N;
        }
        if (HSTASH && ti > 0)  // the last tile's chunks (its epilogue after the loop)
            for (int c = 0; c < HCHUNKS; c++) load_h_chunk(c);
        return;
    }
    setmaxnreg_inc<HSIDE ? 224 : 232>();

    const int cw = wg - 1, t = tid % 128, warp = t / 32, lane = t % 32;
    // this thread's accumulator rows in the tile: r0 and r0 + 8 (elements 4j + 2i + e: row r0 + 8i,
    // column 8j + 2 (lane % 4) + e); in the swizzled epilogue tile row r's 16-byte chunk c sits at
    // c ^ (r % 8), and r % 8 = lane / 4
    const int r0 = 64 * cw + 16 * warp + lane / 4;
    constexpr int JP = EC / 8;  // n8 tiles per epilogue pass
    float acc[128];
    int it = 0, ti = 0;
    // EPI_HSTASH: part q of the previous tile's epilogue (at pm0, pn0, of pN columns, out by pmo):
    // chunk c = q / HPARTS (columns 64c .. 64c + 63), its n8 tiles of part p = q % HPARTS. This
    // thread's stashed products there (rows r0, r0 + 8; the offsets they were stored at) times
    // 2 sqrt(h) from the h buffer, back into the stash; after a chunk's last part the warpgroup's
    // 64 rows of it go out by a TMA store (hc: chunks taken so far)
    int hc = 0, pm0 = 0, pn0 = 0, pN = 0;
    const CUtensorMap *pmo = &op.out[0];
    auto epi_part = [&](int q) {
        constexpr int NJ = 8 / HPARTS;  // n8 tiles a part
        const int c = q / HPARTS, p = q % HPARTS;
        if (p == 0) mbar_wait(e_full, hc & 1);
        // the loads first (their latencies overlap), then the math and the stores
        uint32_t hv2[2 * NJ], dv2[2 * NJ], offs[2 * NJ];
#pragma unroll
        for (int e = 0; e < 2 * NJ; e++) {  // n8 tile p NJ + e / 2 of the chunk, row r0 + 8 (e % 2)
            offs[e] = epi_off(r0 + 8 * (e % 2), p * NJ + e / 2, lane);
            asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(hv2[e]) : "r"(shb + offs[e]) : "memory");
            asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(dv2[e]) : "r"(se + c * E_BOX_BYTES + offs[e]) : "memory");
        }
        // the factor 2 sqrt(h): sqrt_fast unless a lane of the warp holds a tiny or infinite h
        // (sqrt_rn then; bitwise the same numbers either way). OPT_RSQ: two_sqrt_rsq, as variant 6
        bool special = false;
#pragma unroll
        for (int e = 0; e < 2 * NJ && !(OPT & OPT_RSQ); e++) {
            const float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&hv2[e]));
            special |= sqrt_special(hv.x) | sqrt_special(hv.y);
        }
        auto finish = [&](auto slow) {
#pragma unroll
            for (int e = 0; e < 2 * NJ; e++) {
                const float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&hv2[e]));
                const float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&dv2[e]));
                const float r0s = decltype(slow)::value ? sqrt_rn(hv.x) : sqrt_fast(hv.x);
                const float r1s = decltype(slow)::value ? sqrt_rn(hv.y) : sqrt_fast(hv.y);
                const float s0 = 2.f * r0s * dv.x, s1 = 2.f * r1s * dv.y;
                const __nv_bfloat162 o = __floats2bfloat162_rn(hv.x > 0.f ? s0 : 0.f, hv.y > 0.f ? s1 : 0.f);
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(se + c * E_BOX_BYTES + offs[e]), "r"(*reinterpret_cast<const uint32_t *>(&o))
                             : "memory");
            }
        };
        if (OPT & OPT_RSQ) {  // two_sqrt_rsq's factors; the warp's part again with sqrt_rn where one is flagged
            bool flagged = false;
#pragma unroll
            for (int e = 0; e < 2 * NJ; e++) {
                const float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&dv2[e]));
                const float f0 = two_sqrt_rsq(__uint_as_float(hv2[e] << 16)), f1 = two_sqrt_rsq(__uint_as_float(hv2[e] & 0xffff0000u));
                flagged |= !(f0 < INFINITY) | !(f1 < INFINITY);
                const __nv_bfloat162 o = __floats2bfloat162_rn(f0 * dv.x, f1 * dv.y);
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(se + c * E_BOX_BYTES + offs[e]), "r"(*reinterpret_cast<const uint32_t *>(&o))
                             : "memory");
            }
            if (__any_sync(0xffffffffu, flagged)) finish(std::true_type{});
        } else if (__any_sync(0xffffffffu, special)) finish(std::true_type{});
        else finish(std::false_type{});
        if (p < HPARTS - 1) return;
        mbar_arrive(e_empty);  // this thread's reads of the chunk's h are done
        hc++;
        fence_proxy_async();  // the stores above -> visible to the TMA
        named_bar_sync(1 + cw, 128);
        if (t == 0) {
            const int col = pn0 + 64 * c;
            if (col < pN && pm0 + 64 * cw < M) tma_store_2d(pmo, se + c * E_BOX_BYTES + cw * (64 * 128), col, pm0 + 64 * cw);
            bulk_commit();
        }
    };
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ti++) {
        const int m0 = tile / n_tiles * BM;
        int n0, N;
        const int gt = tile_n(tile % n_tiles, n0, N);
        const CUtensorMap *mo = &op.out[gt];
#ifdef BREAK_HSTASH  // a deliberately wrong variant (dev/broken_variants.sh): the previous tile's place is moved on too early
        pm0 = m0, pn0 = n0, pN = N, pmo = mo;
#endif
        for (int k = 0; k < kb; k++, it++) {
            const int s = it % STAGES;
            mbar_wait(full(s), (it / STAGES) & 1);
            const uint32_t sa = base + s * STAGE_BYTES + cw * (64 * 128), sb = base + s * STAGE_BYTES + A_BYTES;
            wgmma_fence();
#ifdef BREAK_RELU2_GEMM  // a deliberately wrong variant (dev/broken_variants.sh): the last k-block restarts the sum
            const int k_first = kb - 1;
#else
            const int k_first = 0;
#endif
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                // A: 16 k = 32 bytes along the swizzled rows; B K-major the same, B N-major: 16 k rows
                // of 128 bytes, its 4 boxes of 64 columns 8 KiB apart (the descriptor's leading offset)
                const uint64_t db = BNM ? wgmma_desc(sb + 2048 * kk, B_BOX_BYTES) : wgmma_desc(sb + 32 * kk);
                wgmma_m64n256k16_ss<BNM ? 1 : 0>(acc, wgmma_desc(sa + 32 * kk), db, k != k_first || kk != 0);
            }
            wgmma_commit();
            // EPI_HTILE: once the previous tile's output stores have read the epilogue tile, the
            // producer may load this tile's h into it (checked here, while the products run)
            if (HTILE && k == 0 && ti > 0 && t == 0) {
                bulk_wait_read<0>();
                mbar_arrive(e_empty);
            }
            // EPI_HSTASH: the previous tile's epilogue chunks, while this k-block's products run
            // (a loop, not unrolled: one copy of a part's code, which stays in the instruction cache)
            if (HSTASH && ti > 0)
#pragma unroll 1
                for (int q = part_begin(k, kb); q < part_begin(k + 1, kb); q++) epi_part(q);
            wgmma_wait<1>();  // the previous k-block's products are done: its stage goes back
            if (k > 0) mbar_arrive(empty((it - 1) % STAGES));
        }
        wgmma_wait<0>();
        reg_fence(acc);
        mbar_arrive(empty((it - 1) % STAGES));

        if (HSIDE) {  // the products into the stash as bf16 once the side warps are done with the previous tile's
            if (ti > 0) mbar_wait(e_empty, (ti - 1) & 1);
#pragma unroll
            for (int j = 0; j < 32; j++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const uint32_t off = (j / 8) * E_BOX_BYTES + epi_off(r0 + 8 * i, j % 8, lane);
                    const __nv_bfloat162 o = __floats2bfloat162_rn(acc[4 * j + 2 * i], acc[4 * j + 2 * i + 1]);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(se + off), "r"(*reinterpret_cast<const uint32_t *>(&o)) : "memory");
                }
            mbar_arrive(s_full);  // (release: the stores above are seen by the side warps that wait on it)
            continue;
        }
        if (HSTASH) {  // the products into the stash as bf16, each box once the previous tile's store of it has read it
            // boxes 0..2 when all but the newest store group (the last chunk's, issued during the
            // last k-block) are done, then box 3
#pragma unroll
            for (int j = 0; j < 32; j++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    if (i == 0 && (j == 0 || j == 24)) {
                        if (t == 0) {
                            if (j == 0) bulk_wait_read<1>();
                            else bulk_wait_read<0>();
                        }
                        named_bar_sync(1 + cw, 128);
                    }
                    const uint32_t off = (j / 8) * E_BOX_BYTES + epi_off(r0 + 8 * i, j % 8, lane);
                    const __nv_bfloat162 o = __floats2bfloat162_rn(acc[4 * j + 2 * i], acc[4 * j + 2 * i + 1]);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(se + off), "r"(*reinterpret_cast<const uint32_t *>(&o)) : "memory");
                }
            pm0 = m0, pn0 = n0, pN = N, pmo = mo;
            continue;
        }

        if (QK && gt < op.qk.nnorm) {  // q or k: per-head RMSNorm, RoPE, gain (qk_epilogue)
            qk_epilogue(op.qk, gt, acc, se, mo, m0, n0, N, M, r0, cw, t, lane);
            continue;
        }
        // epilogue: relu^2 (or the gradient factor, from h) into the epilogue tile as bf16, then
        // this warpgroup's 64 rows out by TMA stores (rows past M and columns past N are not
        // written); EPI_FWD / EPI_HRING in two passes of 128 columns
        if (HTILE) mbar_wait(e_full, ti & 1);
#pragma unroll
        for (int p = 0; p < 256 / EC; p++) {
            // where this pass's h sits: the epilogue tile (EPI_HTILE) or the pass's ring slot, in the
            // epilogue tile's layout (boxes of 128 rows x 64 columns, 16 KiB apart)
            uint32_t sh = se;
            if (HRING) {
                const int s = it % STAGES;
                mbar_wait(full(s), (it / STAGES) & 1);
                sh = base + s * STAGE_BYTES;
            }
            if (!HTILE) {  // the epilogue tile is free once this warpgroup's previous stores have read it
                if (t == 0) bulk_wait_read<0>();
                named_bar_sync(1 + cw, 128);
            }
            // OPT_RSQ: the pass with two_sqrt_rsq's factors; where a lane of the warp met an h it
            // does not cover (a denormal or infinite one, flagged), the warp does the pass again
            // with sqrt_rn below (rsq = false: variant 1's numbers), overwriting every value
            bool flagged = false;
            auto epi_pass = [&](auto rsq) {
#pragma unroll
                for (int jp = 0; jp < JP; jp++)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int j = p * JP + jp, r = r0 + 8 * i;
                        const uint32_t off = (jp / 8) * E_BOX_BYTES + epi_off(r, jp % 8, lane);
                        float v0 = acc[4 * j + 2 * i], v1 = acc[4 * j + 2 * i + 1];
                        if (BWD) {  // d relu(u)^2 / du = 2 relu(u) = 2 sqrt(h), as relu2_backward_from_out
                            uint32_t hv2;
                            asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(hv2) : "r"(sh + off) : "memory");
                            const float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&hv2));
                            if (decltype(rsq)::value) drelu2_scale<true>(v0, v1, hv2, flagged);
                            else if (OPT & (OPT_SQRT_FAST | OPT_RSQ)) drelu2_scale<false>(v0, v1, hv2, flagged);
                            else if (OPT & OPT_SQRT_SEL) {  // sqrtf of h or 1: no slow path for the zeros (the same result)
                                const float s0 = sqrtf(hv.x > 0.f ? hv.x : 1.f), s1 = sqrtf(hv.y > 0.f ? hv.y : 1.f);
                                v0 = hv.x > 0.f ? 2.f * s0 * v0 : 0.f;
                                v1 = hv.y > 0.f ? 2.f * s1 * v1 : 0.f;
                            } else {
                                v0 = hv.x > 0.f ? 2.f * sqrtf(hv.x) * v0 : 0.f;
                                v1 = hv.y > 0.f ? 2.f * sqrtf(hv.y) * v1 : 0.f;
                            }
                        } else if (!PLAIN) {
                            v0 = fmaxf(v0, 0.f) * fmaxf(v0, 0.f);
                            v1 = fmaxf(v1, 0.f) * fmaxf(v1, 0.f);
                        }
                        const __nv_bfloat162 o = __floats2bfloat162_rn(v0, v1);
                        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(se + off), "r"(*reinterpret_cast<const uint32_t *>(&o)) : "memory");
                    }
            };
            if (OPT & OPT_RSQ) {
                epi_pass(std::true_type{});
#ifdef BREAK_RSQ_REDO  // a deliberately wrong variant (dev/broken_variants.sh): flagged passes are not redone
                flagged = false;
#endif
                if (__any_sync(0xffffffffu, flagged)) epi_pass(std::false_type{});
            } else epi_pass(std::false_type{});
            if (HRING) {  // this thread's reads of the pass's h are done (their values are stored above): the slot goes back
                mbar_arrive(empty(it % STAGES));
                it++;
            }
            fence_proxy_async();  // the stores above -> visible to the TMA (async proxy)
            named_bar_sync(1 + cw, 128);
            if (t == 0) {
                for (int b = 0; b < EC / 64; b++) {
                    const int col = n0 + p * EC + 64 * b;
                    if (col < N && m0 + 64 * cw < M) tma_store_2d(mo, se + b * E_BOX_BYTES + cw * (64 * 128), col, m0 + 64 * cw);
                }
                bulk_commit();
            }
        }
    }
    if (HSTASH && ti > 0)  // the last tile's epilogue
#pragma unroll 1
        for (int q = 0; q < HCHUNKS * HPARTS; q++) epi_part(q);
    if (t == 0) bulk_wait_all();  // the last stores done before the CTA (and its shared memory) ends
#endif
}

// ----------------------------------------------------------------------------
// The q, k, v GEMM in ping-pong form (QKV_FWD=1, matmul_forward_qkv_norm's variant 1)
//
// EPI_QK's epilogue (per-head RMSNorm, RoPE, gain, and xn / rstd for the backward) takes about as
// long as the 128 x 256 tile's products (K = 512 is only 8 k-blocks), and in the kernel above both
// consumer warpgroups run it at once, so the tensor cores idle for it (seed shape: 273 us against
// the plain grouped GEMM's 166). Here each consumer warpgroup owns whole tiles of 128 rows x 128
// columns (two heads of one group) and the two take turns: one's epilogue runs while the other's
// products do. The 64-row ping-pong tried above for the relu^2 GEMMs lost on L2 bytes (1.67x
// the bytes a flop); this one avoids that by keeping B in shared memory: a CTA works on one
// n-block (128 columns of one group) for all its tiles, so W's 128 x K panel (K <= 512: 128 KiB) is
// loaded once and only A streams, 16 KiB a k-block for 2 MFLOP (the 128 x 256 tile: 48 KiB for
// 4 MFLOP). CTA b takes n-block b % NB and the row tiles b / NB, + C, + 2C, ... (C CTAs an
// n-block, NB C <= the SM count), its local tiles 0, 2, 4, .. to consumer 0 and 1, 3, 5, .. to
// consumer 1. The A ring runs in the CTA's tile order; a consumer starts a tile's products once
// the other has issued all of the tile before (named barriers 3, 4: the turns).
// Shared memory: the B panel (K / 64 k-blocks of 128 n-rows x 128 bytes: 16 KiB each), the A
// ring (pp_stages x 16 KiB), each consumer's epilogue boxes (8 KiB each: 64 rows of one head,
// used in turn: qk_epilogue_pass), the barriers.
// Measured (H200, seed shape 98304 x 512 -> 512 + 256 + 256, dev_matmul, 2026-12-03, same call):
// 243.6 us against the 128 x 256 kernel's 277.1 (plain grouped GEMM 161.9); without xn and rstd
// (the eval's form) 185.7. A first form whose epilogue rounds took two heads and two barriers each
// (thread 0 waiting for the previous store before the warpgroup wrote): 248.7 us. Training, 12
// steps: 494.27 / 495.42 ms a step against 496.48 / 497.00 before (and QKV_FWD=0 497.81 / 496.03).
// What is left: the epilogue (4 rounds of one head for q and k a half, 8 a tile, plus xn) still
// outlasts the other consumer's mainloop (~3 us a tile): the eval form, half the rounds, is 58
// us faster.
// The same kernel runs the MLP's relu^2 GEMMs (PE, the epilogue): PP_QKV the q, k, v forward
// above; PP_RELU2 the fc forward (relu^2, as EPI_FWD); PP_DRELU2 the backward's input gradient
// from W^T (2 sqrt(h) by two_sqrt_rsq and the flagged redo, as variant 6). PP_DRELU2 takes h a
// box (64 rows x 64 columns) at a time by TMA into the box the round then writes its result to,
// two rounds ahead: 3 boxes a consumer (each round's h loads while the two before it are
// computed and stored), so the A ring has 3 stages. The producer prefetches a tile's h into L2
// as it starts the tile's A loads, a mainloop or more before the epilogue reads it.
// Measured (H200, seed shape 98304 x 512 -> 1536, dev_matmul, 2026-12-03, same call): PP_RELU2
// 225.1 us against the 128 x 256 kernel's 232.4 (the plain cuBLASLt fc ~205): now the default
// (RELU2_FWD=1). PP_DRELU2 (backward variant 9) 337.4 against variant 6's 327.6: not the default.
// Each of its four rounds a tile waits for the round before's output store to have read its box
// (the box takes the h two rounds on), and reads h from L2; the 128 x 256 kernel's h comes
// through the A ring instead. The backward moves 704 MB (dY, h, dfc) to the plain GEMM's 402.
enum { PP_QKV = 0, PP_RELU2 = 1, PP_DRELU2 = 2 };
constexpr int PP_BN = 128, PP_MAX_KB = 8;
template <int PE> __host__ __device__ constexpr int pp_stages() { return PE == PP_DRELU2 ? 3 : 4; }
template <int PE> __host__ __device__ constexpr int pp_boxes() { return PE == PP_DRELU2 ? 3 : 2; }  // a consumer's
constexpr uint32_t PP_PANEL = PP_MAX_KB * 2 * B_BOX_BYTES, PP_RING = PP_PANEL, PP_BOX = 64 * 128;
template <int PE> __host__ __device__ constexpr uint32_t pp_epi() { return PP_RING + pp_stages<PE>() * A_BYTES; }
template <int PE> __host__ __device__ constexpr uint32_t pp_bar() { return pp_epi<PE>() + 2 * pp_boxes<PE>() * PP_BOX; }
// full[stages], empty[stages], b full, (PP_DRELU2) h full[2 consumers][3 boxes]
template <int PE> __host__ __device__ constexpr size_t pp_smem() { return pp_bar<PE>() + (2 * pp_stages<PE>() + 1 + 6) * 8 + 1024; }
static_assert(pp_smem<PP_QKV>() <= 227 * 1024 && pp_smem<PP_RELU2>() <= 227 * 1024 && pp_smem<PP_DRELU2>() <= 227 * 1024,
              "the panel, ring and epilogue boxes fit in shared memory");
// n-block nb (of 128 columns) of the groups' n_cols: its group, and its first column in the group
__host__ __device__ inline int pp_nblock(const Operands &op, int nb, int &n0) {
    int g = 0;
    for (; g < MAXG - 1; g++) {
        const int blocks = (op.n_cols[g] + PP_BN - 1) / PP_BN;
        if (nb < blocks) break;
        nb -= blocks;
    }
    n0 = nb * PP_BN;
    return g;
}

template <int PE>
__global__ void __launch_bounds__(THREADS, 1) pingpong_gemm_kernel(const __grid_constant__ Operands op, int M, int NB, int C) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int STAGES = pp_stages<PE>(), BOXES = pp_boxes<PE>();
    extern __shared__ unsigned char smem_raw[];
    const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int kb = op.k_end[0], m_tiles = (M + BM - 1) / BM, j0 = blockIdx.x / NB;
    int n0;
    const int g = pp_nblock(op, blockIdx.x % NB, n0), N = op.n_cols[g];
    const int nbox = min(2, (N - n0) / 64);  // 64-column boxes inside N (a partial n-block: one)
    auto full = [&](int s) { return base + pp_bar<PE>() + 8 * s; };
    auto empty = [&](int s) { return base + pp_bar<PE>() + 8 * (STAGES + s); };
    const uint32_t b_full = base + pp_bar<PE>() + 16 * STAGES;
    auto h_full = [&](int c, int b) { return b_full + 8 + 8 * (3 * c + b); };
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(full(s), 1);
            mbar_init(empty(s), 128);  // the consuming warpgroup's threads
        }
        mbar_init(b_full, 1);
        for (int c = 0; c < 2; c++)
            for (int b = 0; b < 3; b++) mbar_init(h_full(c, b), 1);  // (PP_DRELU2's; unused by the others)
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {  // the producer: thread 0 loads the B panel, then streams A
        setmaxnreg_dec<40>();
        if (tid != 0) return;
        mbar_arrive_expect_tx(b_full, kb * nbox * B_BOX_BYTES);
        for (int k = 0; k < kb; k++)
            for (int j = 0; j < nbox; j++) tma_load_2d(base + k * 2 * B_BOX_BYTES + j * B_BOX_BYTES, &op.b[g], b_full, k * BK, n0 + 64 * j);
        int it = 0;
        for (int mt = j0; mt < m_tiles; mt += C) {
            if (PE == PP_DRELU2)  // the tile's h towards L2, a mainloop or more before its epilogue
                for (int hf = 0; hf < 2; hf++)
                    for (int j = 0; j < nbox; j++) tma_prefetch_2d(&op.h, n0 + 64 * j, mt * BM + 64 * hf);
            for (int k = 0; k < kb; k++, it++) {
                const int s = it % STAGES;
                if (it >= STAGES) mbar_wait(empty(s), (it / STAGES - 1) & 1);
                mbar_arrive_expect_tx(full(s), A_BYTES);
                tma_load_2d(base + PP_RING + s * A_BYTES, &op.a[0], full(s), k * BK, mt * BM);
            }
        }
        return;
    }
    setmaxnreg_inc<232>();
    const int cw = wg - 1, t = tid % 128, warp = t / 32, lane = t % 32;
    const int rl = 16 * warp + lane / 4;  // this thread's rows rl, rl + 8 of each 64-row half
    const uint32_t sbox = base + pp_epi<PE>() + cw * BOXES * PP_BOX;
    const CUtensorMap *mo = &op.out[g];
    const int heads = N / 64;
    const int n_loc = (m_tiles - j0 + C - 1) / C;  // this CTA's tiles
    int rr = 0;  // this warpgroup's epilogue rounds (a 64 x 64 box each)
    // PP_DRELU2: h of round r (this warpgroup's tile cw + 2 (r / R), half and box from r % R) into
    // box r % 3, by thread 0; rows past M: no bytes
    const int R = 2 * nbox;
    auto load_h = [&](int r) {
        if (PE != PP_DRELU2 || t != 0) return;
        const int li = cw + 2 * (r / R), q = r % R;
        if (li >= n_loc) return;
        const int row = (j0 + li * C) * BM + 64 * (q / nbox), bar = h_full(cw, r % 3);
        mbar_arrive_expect_tx(bar, row < M ? PP_BOX : 0);
#ifdef BREAK_PP_H  // a deliberately wrong variant (dev/broken_variants.sh): every box takes h of the n-block's first 64 columns
        if (row < M) tma_load_2d(sbox + (r % 3) * PP_BOX, &op.h, bar, n0, row);
        return;
#endif
        if (row < M) tma_load_2d(sbox + (r % 3) * PP_BOX, &op.h, bar, n0 + 64 * (q % nbox), row);
    };
    load_h(0);
    load_h(1);
    float acc[2][64];  // the tile's two 64-row halves (m64n128 accumulators)
    mbar_wait(b_full, 0);
    for (int li = cw; li < n_loc; li += 2) {
        const int m0 = (j0 + li * C) * BM;
        int it = li * kb;
        // the turn: the other consumer has issued all of tile li - 1's products (named barrier 3 +
        // cw: its bar.arrive and this warpgroup's bar.sync). So the tensor cores serve one
        // mainloop at a time, and no ring slot is waited on two phases ahead (a parity wait
        // would take phase n - 2 for phase n): tile li - 1's k-blocks are all in before ours load
        if (li > 0) named_bar_sync(3 + cw, 256);
        for (int k = 0; k < kb; k++, it++) {
            const int s = it % STAGES;
            mbar_wait(full(s), (it / STAGES) & 1);
            const uint32_t sa = base + PP_RING + s * A_BYTES, sb = base + k * 2 * B_BOX_BYTES;
            wgmma_fence();
#ifdef BREAK_QK_PINGPONG  // a deliberately wrong variant (dev/broken_variants.sh): the second half skips k-block 0
            const bool skip0 = k == 0;
#else
            const bool skip0 = false;
#endif
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                wgmma_m64n128k16_ss(acc[0], wgmma_desc(sa + 32 * kk), wgmma_desc(sb + 32 * kk), k != 0 || kk != 0);
                if (!skip0) wgmma_m64n128k16_ss(acc[1], wgmma_desc(sa + 64 * 128 + 32 * kk), wgmma_desc(sb + 32 * kk), k != 0 || kk != 0);
            }
            wgmma_commit();
            wgmma_wait<1>();  // the previous k-block's products are done: its slot goes back
            if (k > 0) mbar_arrive(empty((it - 1) % STAGES));
        }
        if (li + 1 < n_loc) named_bar_arrive(3 + (1 - cw), 256);  // the other consumer's turn
        wgmma_wait<0>();
        reg_fence(acc[0]);
        reg_fence(acc[1]);
        mbar_arrive(empty((it - 1) % STAGES));

        // epilogue: each 64-row half, a 64-column box at a time, through this warpgroup's boxes in turn
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row0 = m0 + 64 * hf;
            if (PE == PP_QKV && g < op.qk.nnorm) {  // q or k: per-head RMSNorm, RoPE, gain
                float2 cs[2], sn[2];
                qk_rope_rows(op.qk, row0 + rl, lane, cs, sn);
                qk_epilogue_pass(op.qk, g, acc[hf], n0 / 64, heads, cs, sn, sbox, PP_BOX, mo, n0, row0, M, rl, 1 + cw, t, lane, rr);
                continue;
            }
#pragma unroll
            for (int hp = 0; hp < 2; hp++) {
                if (hp >= nbox) break;
                const int b = PE == PP_DRELU2 ? rr % 3 : rr & 1;
                const uint32_t box = sbox + b * PP_BOX;
                uint32_t hv[16];  // PP_DRELU2: this thread's h pairs of the box
                if (PE == PP_DRELU2) {
                    mbar_wait(h_full(cw, b), (rr / 3) & 1);
#pragma unroll
                    for (int e = 0; e < 16; e++)
                        asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(hv[e]) : "r"(box + epi_off(rl + 8 * (e % 2), e / 2, lane)) : "memory");
                }
                auto store_pass = [&](auto rsq, bool &flagged) {
#pragma unroll
                    for (int e = 0; e < 16; e++) {  // n8 tile jj = e / 2 of the box, row rl + 8 i (i = e % 2)
                        const int j = 8 * hp + e / 2, i = e % 2;
                        float v0 = acc[hf][4 * j + 2 * i], v1 = acc[hf][4 * j + 2 * i + 1];
                        if (PE == PP_DRELU2) drelu2_scale<decltype(rsq)::value>(v0, v1, hv[e], flagged);
#ifdef BREAK_PP_RELU2  // a deliberately wrong variant (dev/broken_variants.sh): the square without the relu
                        if (PE == PP_RELU2) v0 = v0 * v0, v1 = v1 * v1;
#else
                        if (PE == PP_RELU2) v0 = fmaxf(v0, 0.f) * fmaxf(v0, 0.f), v1 = fmaxf(v1, 0.f) * fmaxf(v1, 0.f);
#endif
                        const __nv_bfloat162 o = __floats2bfloat162_rn(v0, v1);
                        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(box + epi_off(rl + 8 * i, e / 2, lane)),
                                     "r"(*reinterpret_cast<const uint32_t *>(&o))
                                     : "memory");
                    }
                };
                bool flagged = false;
                store_pass(std::true_type{}, flagged);
                if (PE == PP_DRELU2 && __any_sync(0xffffffffu, flagged)) store_pass(std::false_type{}, flagged);  // sqrt_rn
                if (PE == PP_DRELU2) {  // the h of two rounds on into the box the round before this one used
                    fence_proxy_async();
                    if (t == 0) bulk_wait_read<0>();
                    load_h(rr + 2);
                    named_bar_sync(1 + cw, 128);
                    if (t == 0) {
                        if (row0 < M) tma_store_2d(mo, box, n0 + 64 * hp, row0);
                        bulk_commit();
                    }
                } else epi_round_end(mo, box, n0 + 64 * hp, row0, M, 1 + cw, t);
                rr++;
            }
        }
    }
    if (t == 0) bulk_wait_all();  // the last stores done before the CTA (and its shared memory) ends
#endif
}

// TMA map of a row-major (rows, cols) bf16 matrix, boxes of box_rows x 64 columns (128 bytes),
// 128-byte swizzle; boxes past the edges read as zeros
inline CUtensorMap mlp_tensor_map(const bf16 *p, int rows, int cols, int box_rows) {
    CUtensorMap m;
    const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
    const cuuint64_t strides[1] = {(cuuint64_t)cols * sizeof(bf16)};
    const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
    const cuuint32_t elem_strides[2] = {1, 1};
    const CUresult r = tensor_map_encoder()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16 *>(p), dims, strides, box,
                                            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) fatal("matmul: cuTensorMapEncodeTiled failed (error %d) for a %d x %d matrix", (int)r, rows, cols);
    return m;
}

// the SM count, once `kernel` may use `smem` bytes of dynamic shared memory (each launcher's
// first call; it keeps the count)
inline int mlp_prepare(const void *kernel, size_t smem) {
    int dev = 0, sms = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return sms;
}
// one persistent CTA per SM (at most one per tile) over ceil(M / 128) x op's n-tiles
template <int EPI, bool BNM, int OPT = 0>
inline void mlp_launch(const Operands &op, int M, cudaStream_t stream) {
    static const int sms = mlp_prepare((const void *)mlp_relu2_gemm_kernel<EPI, BNM, OPT>, smem_bytes<EPI>());
    const long tiles = (long)((M + BM - 1) / BM) * op.n_end[MAXG - 1];
    mlp_relu2_gemm_kernel<EPI, BNM, OPT><<<(int)std::min<long>(tiles, sms), THREADS, smem_bytes<EPI>(), stream>>>(op, M);
    cudaCheckLaunch();
}
// one group. w: (N, K) when B is K-major (the forward's W, the backward's W^T), (K, N) when
// N-major (BNM)
template <int EPI, bool BNM, int OPT = 0>
inline void mlp_relu2_launch(bf16 *out, const bf16 *a, const bf16 *w, const bf16 *h, int M, int K, int N, cudaStream_t stream) {
    Operands op;
    op.a[0] = mlp_tensor_map(a, M, K, BM);
    op.b[0] = BNM ? mlp_tensor_map(w, K, N, 64) : mlp_tensor_map(w, N, K, 64);
    op.out[0] = mlp_tensor_map(out, M, N, 64);  // a consumer warpgroup's 64 rows
    for (int g = 0; g < MAXG; g++) {  // the unused groups: copies (never read)
        op.a[g] = op.a[0], op.b[g] = op.b[0], op.out[g] = op.out[0];
        op.k_end[g] = K / BK, op.n_end[g] = (N + BN - 1) / BN, op.n_cols[g] = N;
    }
    // h: boxes of 128 rows (EPI_HSIDE: 64, a half per load)
    op.h = (EPI == EPI_HTILE || EPI == EPI_HRING || EPI == EPI_HSTASH || EPI == EPI_HSIDE) ? mlp_tensor_map(h, M, N, EPI == EPI_HSIDE ? 64 : BM)
                                                                                          : op.a[0];  // (unused forward)
    mlp_launch<EPI, BNM, OPT>(op, M, stream);
}
// along N: out_g (M, n[g]) = A W_g^T, A (M, K), W_g (n[g], K) (B K-major), g < ng
// (the operands alone: EPI_QK's launch adds its epilogue's)
inline Operands grouped_n_operands(bf16 *const out[], const bf16 *a, const bf16 *const w[], const int n[], int ng, int M, int K) {
    Operands op;
    int tiles = 0;
    for (int g = 0; g < MAXG; g++) {
        const int i = std::min(g, ng - 1);  // unused groups: the last one again (never reached)
        op.a[g] = g ? op.a[0] : mlp_tensor_map(a, M, K, BM);
        op.b[g] = mlp_tensor_map(w[i], n[i], K, 64);
        op.out[g] = mlp_tensor_map(out[i], M, n[i], 64);
        if (g < ng) tiles += (n[g] + BN - 1) / BN;
        op.k_end[g] = K / BK, op.n_end[g] = tiles, op.n_cols[g] = n[i];
    }
    op.h = op.a[0];
    return op;
}
inline void mlp_grouped_n_launch(bf16 *const out[], const bf16 *a, const bf16 *const w[], const int n[], int ng, int M, int K,
                                 cudaStream_t stream) {
    mlp_launch<EPI_PLAIN, false>(grouped_n_operands(out, a, w, n, ng, M, K), M, stream);
}
// along K: out (M, N) = sum_g A_g W_g, A_g (M, k[g]), W_g (k[g], N) (B N-major), g < ng
inline void mlp_grouped_k_launch(bf16 *out, const bf16 *const a[], const bf16 *const w[], const int k[], int ng, int M, int N,
                                 cudaStream_t stream) {
    Operands op;
    int blocks = 0;
    for (int g = 0; g < MAXG; g++) {
        const int i = std::min(g, ng - 1);
        op.a[g] = mlp_tensor_map(a[i], M, k[i], BM);
        op.b[g] = mlp_tensor_map(w[i], k[i], N, 64);
        op.out[g] = g ? op.out[0] : mlp_tensor_map(out, M, N, 64);
        if (g < ng) blocks += k[g] / BK;
        op.k_end[g] = blocks, op.n_end[g] = (N + BN - 1) / BN, op.n_cols[g] = N;
    }
    op.h = op.a[0];
    mlp_launch<EPI_PLAIN, true>(op, M, stream);
}
// the ping-pong kernel: NB n-blocks of 128 columns over the groups (op.n_cols; 0 for an unused
// group), C CTAs each (at most one per SM in all, at most one per row tile)
template <int PE>
inline void pp_launch(const Operands &op, int M, cudaStream_t stream) {
    static const int sms = mlp_prepare((const void *)pingpong_gemm_kernel<PE>, pp_smem<PE>());
    int NB = 0;
    for (int g = 0; g < MAXG; g++) NB += (op.n_cols[g] + PP_BN - 1) / PP_BN;
    const int m_tiles = (M + BM - 1) / BM, C = std::max(1, std::min(sms / NB, m_tiles));
    pingpong_gemm_kernel<PE><<<NB * C, THREADS, pp_smem<PE>(), stream>>>(op, M, NB, C);
    cudaCheckLaunch();
}
// mlp_grouped_n_launch through the ping-pong kernel (K <= 512): PP_QKV with no normalized group stores every
// group's accumulator as it is. The unused groups get no columns, so pp_launch counts only the
// used groups' n-blocks.
inline void pp_grouped_n_launch(bf16 *const out[], const bf16 *a, const bf16 *const w[], const int n[], int ng, int M, int K,
                                cudaStream_t stream) {
    Operands op = grouped_n_operands(out, a, w, n, ng, M, K);
    op.qk = QkEpilogue{};  // nnorm = 0: the plain epilogue for every group
    for (int g = ng; g < MAXG; g++) op.n_cols[g] = 0;
    pp_launch<PP_QKV>(op, M, stream);
}
// the relu^2 GEMMs in ping-pong form (one group, B K-major: w (N, K); K <= 512): out = relu^2(A w^T)
// (PP_RELU2) or (A w^T) 2 sqrt(h) (PP_DRELU2, h (M, N))
template <int PE>
inline void mlp_relu2_pp_launch(bf16 *out, const bf16 *a, const bf16 *w, const bf16 *h, int M, int K, int N, cudaStream_t stream) {
    Operands op;
    op.a[0] = mlp_tensor_map(a, M, K, BM);
    op.b[0] = mlp_tensor_map(w, N, K, 64);
    op.out[0] = mlp_tensor_map(out, M, N, 64);
    op.h = PE == PP_DRELU2 ? mlp_tensor_map(h, M, N, 64) : op.a[0];
    for (int g = 0; g < MAXG; g++) {  // groups 1, 2 unused: no columns
        if (g) op.a[g] = op.a[0], op.b[g] = op.b[0], op.out[g] = op.out[0];
        op.k_end[g] = K / BK, op.n_end[g] = 0, op.n_cols[g] = g ? 0 : N;
    }
    pp_launch<PE>(op, M, stream);
}
// EPI_QK: q, k, v as three groups along N (mlp_grouped_n_launch's), q and k (groups 0, 1) through
// qk_epilogue; xn[0] null: no xn stores (an eval forward), rstd[g] null: none for group g
// (variant 1: the ping-pong kernel, K <= 512)
inline void mlp_qkv_norm_launch(bf16 *const out[3], bf16 *const xn[2], float *const rstd[2], const bf16 *a, const bf16 *const w[3],
                                const int n[3], int M, int K, const float *cos_t, const float *sin_t, const float *q_gain, int T,
                                float eps, int variant, cudaStream_t stream) {
    static_assert(MAXG == 3, "q, k, v: three groups");
    Operands op = grouped_n_operands(out, a, w, n, 3, M, K);
    QkEpilogue &qe = op.qk;
    for (int g = 0; g < 2; g++) {
        qe.xn[g] = xn[0] ? mlp_tensor_map(xn[g], M, n[g], 64) : op.out[g];  // (unused without xn)
        qe.rstd[g] = rstd[g];
    }
    qe.gain[0] = q_gain, qe.gain[1] = nullptr;
    qe.cos_t = cos_t, qe.sin_t = sin_t, qe.eps = eps;
    qe.T = T, qe.nnorm = 2, qe.store_xn = xn[0] != nullptr;
    if (variant == 1) pp_launch<PP_QKV>(op, M, stream);
    else mlp_launch<EPI_QK, false>(op, M, stream);
}

// the variant the model runs: BWD_DEFAULT, or the environment variable RELU2_BWD (developer knob,
// 0 .. BWD_VARIANTS - 1, read once: an A/B of the training step with one binary)
inline int bwd_variant_from_env() {
    static const int v = env_int("RELU2_BWD", 0, BWD_VARIANTS - 1, BWD_DEFAULT, "a relu^2 backward variant (common/matmul.cuh's table)");
    return v;
}
template <bool BNM>
inline void mlp_relu2_backward_launch(int variant, bf16 *dfc, const bf16 *dy, const bf16 *w, const bf16 *h, int M, int K, int N,
                                      cudaStream_t stream) {
    if (variant < 0) variant = bwd_variant_from_env();
    if (variant >= BWD_VARIANTS) fatal("matmul_relu2_backward_dx: variant %d (0..%d, or -1 for the default)", variant, BWD_VARIANTS - 1);
    switch (variant) {
    case 0: mlp_relu2_launch<EPI_HTILE, BNM, 0>(dfc, dy, w, h, M, K, N, stream); break;
    case 1: mlp_relu2_launch<EPI_HRING, BNM, OPT_SQRT_FAST | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 2: mlp_relu2_launch<EPI_HRING, BNM, OPT_SQRT_SEL | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 3: mlp_relu2_launch<EPI_HRING, BNM, OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 5: mlp_relu2_launch<EPI_HSTASH, BNM, OPT_SQRT_FAST | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 6: mlp_relu2_launch<EPI_HRING, BNM, OPT_RSQ | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 7: mlp_relu2_launch<EPI_HSTASH, BNM, OPT_RSQ | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 8: mlp_relu2_launch<EPI_HSIDE, BNM, OPT_RSQ | OPT_PREFETCH>(dfc, dy, w, h, M, K, N, stream); break;
    case 9:  // the ping-pong kernel: W^T (K-major B), K <= 512
        if (BNM || K > PP_MAX_KB * BK)
            fatal("matmul_relu2_backward_dx: variant 9 (ping-pong) needs W^T (matmul_relu2_backward_dx_wt) and K <= %d; got %s, K=%d",
                  PP_MAX_KB * BK, BNM ? "W" : "W^T", K);
        mlp_relu2_pp_launch<PP_DRELU2>(dfc, dy, w, h, M, K, N, stream);
        break;
    default: mlp_relu2_launch<EPI_HTILE, BNM, OPT_SQRT_FAST>(dfc, dy, w, h, M, K, N, stream); break;
    }
}

}  // namespace mlpg

// Whether the fused kernels run this problem: an sm_90a build on an sm_90 GPU, K and N multiples
// of 64 (whole k-blocks and B boxes), 16-byte aligned pointers (TMA, and the rows of 64 columns
// are whole 16-byte words). Otherwise the model takes the cuBLASLt + separate-pass path.
inline bool matmul_relu2_supported(int M, int K, int N, const void *out, const void *a, const void *w, const void *h = nullptr) {
    auto al = [](const void *p) { return ((uintptr_t)p & 15) == 0; };
    return M > 0 && K > 0 && N > 0 && K % 64 == 0 && N % 64 == 0 && al(out) && al(a) && al(w) && (!h || al(h)) &&
           sm90_available();
}
inline void matmul_relu2_check(const char *who, int M, int K, int N, const void *out, const void *a, const void *w,
                               const void *h) {
    if (!matmul_relu2_supported(M, K, N, out, a, w, h))
        fatal("%s: needs an sm_90a build on an sm_90 GPU (here: %s), M > 0, K and N multiples of 64 and 16-byte aligned "
              "pointers; got M=%d K=%d N=%d (use matmul_forward + relu2_forward elsewhere)",
              who, sm90_available() ? "yes" : "no", M, K, N);
    if (out == a || out == w || (h && out == h)) fatal("%s: the output aliases an input", who);
}

// the ping-pong forms (matmul_relu2_forward's variant 1, the backward's variant 9) hold W's
// 128 x K block in shared memory: K <= 512
inline bool matmul_relu2_pp_supported(int K) { return K <= mlpg::PP_MAX_KB * mlpg::BK; }
// out (M, N) = bf16(relu(A W^T)^2): A (M, K), W (N, K) (nn.Linear's weight), all row-major bf16.
// variant: 0 the 128 x 256 kernel (EPI_FWD), 1 the ping-pong kernel (PP_RELU2; K <= 512, else 0
// runs); -1 = the environment variable RELU2_FWD (developer knob, read once; default 1: 225 against
// 232 us at the seed shape, measured above pingpong_gemm_kernel)
inline void matmul_relu2_forward(bf16 *out, const bf16 *a, const bf16 *w, int M, int K, int N, cudaStream_t stream, int variant = -1) {
    ProfScope prof_(PROF_GEMM, stream);
    matmul_relu2_check("matmul_relu2_forward", M, K, N, out, a, w, nullptr);
    static const int env_variant = env_int("RELU2_FWD", 0, 1, 1, "a relu^2 forward form (0: 128 x 256 tiles, 1: ping-pong)");
    if (variant < 0) variant = env_variant;
    if (variant != 0 && variant != 1) fatal("matmul_relu2_forward: variant %d (0, 1, or -1 for the default)", variant);
    if (variant == 1 && matmul_relu2_pp_supported(K)) mlpg::mlp_relu2_pp_launch<mlpg::PP_RELU2>(out, a, w, nullptr, M, K, N, stream);
    else mlpg::mlp_relu2_launch<mlpg::EPI_FWD, false>(out, a, w, nullptr, M, K, N, stream);
}
// dfc (M, N) = bf16((dY W) * 2 sqrt(h)) where h > 0, else 0: dY (M, K), W (K, N) (the proj weight,
// nn.Linear's (out, in) = (K, N)), h (M, N) = relu(u)^2 of the forward; overwrites dfc.
// variant: the backward pipeline (0 .. mlpg::BWD_VARIANTS - 1, the table in mlpg's comment; -1 =
// mlpg::BWD_DEFAULT or RELU2_BWD; variants 0..4 give the same numbers, 5, 7 and 8 round twice, 6,
// 7 and 8 take 2 sqrt(h) from rsqrt.approx, within 2^-21), for
// dev_matmul's checks and benchmark
inline void matmul_relu2_backward_dx(bf16 *dfc, const bf16 *dy, const bf16 *w, const bf16 *h, int M, int K, int N,
                                     cudaStream_t stream, int variant = -1) {
    ProfScope prof_(PROF_GEMM, stream);
    matmul_relu2_check("matmul_relu2_backward_dx", M, K, N, dfc, dy, w, h);
    mlpg::mlp_relu2_backward_launch<true>(variant, dfc, dy, w, h, M, K, N, stream);
}
// the same from wt (N, K) = W^T (row n of wt is column n of W): B K-major, the forward's layout
// (no transposed operand in the mainloop); dY (M, K), h and dfc (M, N) as above
inline void matmul_relu2_backward_dx_wt(bf16 *dfc, const bf16 *dy, const bf16 *wt, const bf16 *h, int M, int K, int N,
                                        cudaStream_t stream, int variant = -1) {
    ProfScope prof_(PROF_GEMM, stream);
    matmul_relu2_check("matmul_relu2_backward_dx_wt", M, K, N, dfc, dy, wt, h);
    mlpg::mlp_relu2_backward_launch<false>(variant, dfc, dy, wt, h, M, K, N, stream);
}

// ----------------------------------------------------------------------------
// grouped GEMMs (Hopper, the same kernel with a plain bf16 epilogue): several projections of one
// input in one launch, and their input gradients summed in one launch. At the seed shape the q, k
// and v projections are three cuBLASLt GEMMs of N = 512, 256, 256 (the last two too narrow to keep
// the tensor cores busy), and their input gradients three GEMMs adding into one 100 MB output;
// grouped, each is one GEMM of N = 1024 (resp. K = 1024) writing its output once.
//
//   matmul_forward_grouped        out_g (M, n_g) = A W_g^T               A (M, K), W_g (n_g, K)
//   matmul_backward_dinp_grouped  dinp (M, N) = sum_g dout_g W_g         dout_g (M, k_g), W_g (k_g, N)
// fp32 accumulation over the whole K, one rounding to bf16. CPU twins: matmul_forward_cpu and
// matmul_backward_cpu per group (model_cpu.h; dev_matmul's "grouped" rows).

// an sm_90a build on an sm_90 GPU, 1 <= ng <= mlpg::MAXG groups, M > 0, the shared dimension and
// every group's dimension positive multiples of 64, every pointer (one: the shared input or the
// output; x_g, w_g per group) 16-byte aligned
inline bool matmul_grouped_supported(int M, int shared_dim, const int dims[], int ng, const void *one, const bf16 *const x[],
                                     const bf16 *const w[]) {
    auto al = [](const void *p) { return p && ((uintptr_t)p & 15) == 0; };
    if (M <= 0 || ng < 1 || ng > mlpg::MAXG || shared_dim <= 0 || shared_dim % 64 || !al(one)) return false;
    for (int g = 0; g < ng; g++)
        if (dims[g] <= 0 || dims[g] % 64 || !al(x[g]) || !al(w[g])) return false;
    return sm90_available();
}
inline bool matmul_forward_grouped_supported(bf16 *const out[], const bf16 *a, const bf16 *const w[], const int n[], int ng, int M,
                                             int K) {
    return matmul_grouped_supported(M, K, n, ng, a, out, w);
}
inline bool matmul_backward_dinp_grouped_supported(bf16 *dinp, const bf16 *const dout[], const bf16 *const w[], const int k[], int ng,
                                                   int M, int N) {
    return matmul_grouped_supported(M, N, k, ng, dinp, dout, w);
}
// variant: 0 the 128 x 256 kernel (EPI_PLAIN), 1 the ping-pong kernel (K <= 512, else 0 runs).
// Both accumulate each output in fp32 over K in the same k order and round once, but the wgmma
// shapes differ (m64n256 against m64n128), so the two may differ in the last bit.
inline void matmul_forward_grouped(bf16 *const out[], const bf16 *a, const bf16 *const w[], const int n[], int ng, int M, int K,
                                   cudaStream_t stream, int variant = 0) {
    ProfScope prof_(PROF_GEMM, stream);
    if (!matmul_forward_grouped_supported(out, a, w, n, ng, M, K))
        fatal("matmul_forward_grouped: needs an sm_90a build on an sm_90 GPU (here: %s), 1..%d groups, M > 0, K and every N "
              "positive multiples of 64, 16-byte aligned pointers; got M=%d K=%d groups=%d (use matmul_forward per group elsewhere)",
              sm90_available() ? "yes" : "no", mlpg::MAXG, M, K, ng);
    for (int g = 0; g < ng; g++)
        if (out[g] == a) fatal("matmul_forward_grouped: output %d aliases the input", g);
    if (variant != 0 && variant != 1) fatal("matmul_forward_grouped: variant %d (0 or 1)", variant);
    if (variant == 1 && K <= mlpg::PP_MAX_KB * mlpg::BK) mlpg::pp_grouped_n_launch(out, a, w, n, ng, M, K, stream);
    else mlpg::mlp_grouped_n_launch(out, a, w, n, ng, M, K, stream);
}
// The q, k, v projections with the q/k path in the epilogue: out = {q, k, v}, W = {W_q, W_k, W_v}
// (n = {H hd, KV hd, KV hd}) as matmul_forward_grouped, except that q and k leave as
// gain * RoPE(xn), xn = the product normalized by its RMS over each head of hd = 64 columns (eps
// inside the root), rounded to bf16; RoPE on the first 16 dims (cos_t, sin_t: (T, 8), the row's
// position t = row % T: rows are (b, t)); gain (H heads, bf16-rounded) for q only. With xn[0]
// given, xn = {qn, kn} and rstd = {rstd_q, rstd_k} ((M, heads) fp32, either may be null) are
// written too: what the backward (qk_norm_rope_gain_backward) reads. The operations of
// qk_norm_rope_gain_forward (layers.cuh) on the fp32 product instead of its bf16 rounding, and
// the q / k pass it saves. CPU twin: matmul_forward_cpu, then qk_norm_rope_gain_forward_cpu.
inline bool matmul_forward_qkv_norm_supported(bf16 *const out[3], const bf16 *a, const bf16 *const w[3], const int n[3], int M, int K,
                                              int hd, int rd) {
    return hd == 64 && rd == mlpg::QK_RD && matmul_forward_grouped_supported(out, a, w, n, 3, M, K);
}
// variant: 0 the 128 x 256 kernel (EPI_QK), 1 the ping-pong kernel (qkv_pingpong_kernel; K <= 512,
// else 0 runs); -1 = QKV_FWD_DEFAULT or the environment variable QKV_FWD (developer knob, read
// once). Both run the same epilogue on their fp32 products; dev_matmul checks each against the
// CPU twins.
constexpr int QKV_FWD_DEFAULT = 1;
inline int qkv_fwd_variant_from_env() {
    static const int v = env_int("QKV_FWD", 0, 1, QKV_FWD_DEFAULT, "a q, k, v GEMM form (0: 128 x 256 tiles, 1: ping-pong)");
    return v;
}
inline void matmul_forward_qkv_norm(bf16 *const out[3], bf16 *const xn[2], float *const rstd[2], const bf16 *a, const bf16 *const w[3],
                                    const int n[3], int M, int K, const float *cos_t, const float *sin_t, const float *q_gain, int T,
                                    float eps, cudaStream_t stream, int variant = -1) {
    ProfScope prof_(PROF_GEMM, stream);
    if (!matmul_forward_qkv_norm_supported(out, a, w, n, M, K, 64, mlpg::QK_RD) || T < 1 || M % T != 0 || !cos_t || !sin_t)
        fatal("matmul_forward_qkv_norm: needs matmul_forward_grouped's conditions (here: %s), head dim 64, ROPE_DIMS %d, T "
              "dividing M and the RoPE tables; got M=%d K=%d T=%d",
              sm90_available() ? "an sm_90 GPU" : "no sm_90 GPU", mlpg::QK_RD, M, K, T);
    for (int g = 0; g < 2; g++)
        if (xn[0] && (!xn[g] || ((uintptr_t)xn[g] & 15) || xn[g] == a || xn[g] == out[g]))
            fatal("matmul_forward_qkv_norm: xn[%d] must be 16-byte aligned, apart from the input and the outputs", g);
    for (int g = 0; g < 3; g++)
        if (out[g] == a) fatal("matmul_forward_qkv_norm: output %d aliases the input", g);
    if (variant < 0) variant = qkv_fwd_variant_from_env();
    if (variant != 0 && variant != 1) fatal("matmul_forward_qkv_norm: variant %d (0, 1, or -1 for the default)", variant);
    if (K > mlpg::PP_MAX_KB * mlpg::BK) variant = 0;  // the ping-pong kernel's B panel holds K <= 512
    mlpg::mlp_qkv_norm_launch(out, xn, rstd, a, w, n, M, K, cos_t, sin_t, q_gain, T, eps, variant, stream);
}
inline void matmul_backward_dinp_grouped(bf16 *dinp, const bf16 *const dout[], const bf16 *const w[], const int k[], int ng, int M, int N,
                                         cudaStream_t stream) {
    ProfScope prof_(PROF_GEMM, stream);
    if (!matmul_backward_dinp_grouped_supported(dinp, dout, w, k, ng, M, N))
        fatal("matmul_backward_dinp_grouped: needs an sm_90a build on an sm_90 GPU (here: %s), 1..%d groups, M > 0, N and every K "
              "positive multiples of 64, 16-byte aligned pointers; got M=%d N=%d groups=%d (use matmul_backward per group elsewhere)",
              sm90_available() ? "yes" : "no", mlpg::MAXG, M, N, ng);
    for (int g = 0; g < ng; g++)
        if (dout[g] == dinp) fatal("matmul_backward_dinp_grouped: the output aliases input %d", g);
    mlpg::mlp_grouped_k_launch(dinp, dout, w, k, ng, M, N, stream);
}
