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
//   - RELU (max(0, .)): available as GEMM_EPI_RELU. relu^2 has no epilogue: the fc GEMM can
//     emit r = relu(u) (what relu^2's backward needs: d/du = 2r), and the square is one more
//     elementwise pass. bf16(relu(u)) == relu(bf16(u)), so it changes no numbers.
//   - DRELU/DGELU/BGRAD*/BIAS*/GELU*: no biases and no GELU in this model, and DRELU multiplies
//     by relu'(u) (0/1), not by relu^2's 2r; none apply.
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
    static const int n = [] {
        const char *s = getenv("MATMUL_AUTOTUNE");
        if (!s) return MATMUL_AUTOTUNE_DEFAULT;
        char *end = nullptr;
        const long v = strtol(s, &end, 10);
        if (!*s || *end || v < 0 || v > 64) fatal_config("MATMUL_AUTOTUNE='%s': need an integer 0..64 (algorithms to time)", s);
        return (int)v;
    }();
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
