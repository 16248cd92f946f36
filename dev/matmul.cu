// dev/matmul.cu: checks and benchmarks of common/matmul.cuh (the cuBLASLt GEMMs).
//
// Versions checked, both through the SHIPPING launchers:
//   1. cuBLASLt (the default path: heuristic algorithm cached per shape)
//   2. the tiled fallback kernel (MatmulContext::force_fallback), which gemm() uses by itself
//      when cuBLASLt has no algorithm for a problem
// against the CPU references matmul_forward_cpu / matmul_backward_cpu (model_cpu.h, in double on
// the same bf16-rounded inputs) and, for the general strided-batched gemm() with transposes,
// alpha/beta and a separate C, a plain double loop written here (model_cpu.h has no such op).
//
// Tolerance, per element: |got - ref| <= rtol*|ref| + 1e-4 * (|alpha| sum_k |a_ik b_kj| + |beta c_ij|)
//   rtol = 2^-7 for bf16 outputs: two roundings to bf16 (unit roundoff u = 2^-8), since with
//   beta != 0 some cuBLASLt kernels round the product before adding C; 1e-6 for fp32 outputs;
//   the second term bounds fp32 accumulation, including tensor cores' truncating adds, with room
//   (their worst case is about K/8 * 2^-23 of the sum of magnitudes: 3e-5 at K = 2048).
// A transposed or misplaced operand misses this by orders of magnitude; NaN never passes.
//
// Version 3: the MLP's fused relu^2 GEMMs (matmul_relu2_forward / matmul_relu2_backward_dx and
// _dx_wt (W^T given, B K-major), every backward variant of each ("relu2 bwd dx fused v<variant>
// w|wt"), Hopper only; elsewhere their rows are skipped and counted) against matmul_relu2_*_cpu in double, and
// the unfused cuBLASLt path they replace (matmul_forward + relu2_forward, matmul_backward +
// relu2_backward_from_out) against the same reference. Tolerance, per element (u the exact
// pre-activation, e = 1e-4 sum_k |a_ik w_kj| its accumulation bound as above):
//   forward   |got - ref| <= rtol |ref| + (2|u| + e) e        (ref = relu(u)^2: (|u| + e)^2 - u^2)
//   backward  |got - ref| <= rtol |ref| + 2 sqrt(h) e         (ref = g * 2 sqrt(h), g = (dY W)_ij)
// with rtol = 2^-8 for the fused kernels (one rounding of the fp32 result to bf16: unit
// roundoff u; the backward's variants 5, 7 and 8 round the product first: 2u; variants 6, 7 and 8 take
// the factor 2 sqrt(h) from rsqrt.approx, whose error, < 2^-21 relative (checked on every bf16 by
// "two_sqrt_rsq"), the second term covers 200 times over), and for the unfused path 3u forward (relu(u) rounded: 2u once squared, then the
// square rounded) and 2u backward (the GEMM's output rounded, then the product). Each row prints its max error and the
// worst error / bound ("observed: relu2_gemm ..." lines, for setting the tolerances at 5-10x).
// M = 98381 (the seed's 98304 rows + 77: a partial last tile) is checked on 640 sampled rows. The
// backward's h holds a few values below 2^-64 (bf16 denormals too), which take the square
// roots' slow paths.
//
// Version 4: the grouped GEMMs of the same kernel (matmul_forward_grouped: the q, k, v projections
// in one launch; matmul_backward_dinp_grouped: their input gradients summed in one launch; Hopper
// only, skipped and counted elsewhere) against matmul_forward_cpu / matmul_backward_cpu per group
// in double: |got - ref| <= 2^-8 |ref| + 1e-4 sum_k |a_ik w_kj| (one rounding; the sum over every
// group's k), at the seed's q, k, v shape, partial n-tiles, one group and two groups. And the
// q, k, v forward with q and k's RMSNorm, RoPE and gain in its epilogue (matmul_forward_qkv_norm,
// "qkv norm" rows; bounds at check_qkv_norm).
//
// Run:  make build/dev_matmul && ./build/dev_matmul          (checks, then benchmark rows)
//       ./build/dev_matmul --no-bench                        (checks only)
//       ./build/dev_matmul --relu2-only                      (only versions 3, 4: checks and benchmark rows)
// Exit status: 0 when every check passes, 1 otherwise.
#include "check.cuh"
#include "../common/layers.cuh"  // relu2_forward, relu2_backward_from_out (the unfused MLP path)
#include "../common/matmul.cuh"
#include "../common/model_cpu.h"

// ----------------------------------------------------------------------------
// host helpers

// n normal values already rounded to bf16 (so the CPU reference sees exactly the GPU's inputs)
static std::vector<float> rand_bf16(size_t n, float std = 1.f) {
    std::vector<float> v(n);
    fill_normal(v, std);
    for (float &x : v) x = __bfloat162float(__float2bfloat16(x));
    return v;
}
static std::vector<double> to_double(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }
static std::vector<double> abs_double(const std::vector<float> &v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = std::fabs((double)v[i]);
    return r;
}

// The bound check described at the top. mag[i]: the magnitude sum that bounds accumulation error.
static bool check_bound(const char *name, const std::vector<float> &got, const std::vector<double> &ref,
                        const std::vector<double> &mag, double rtol, double cacc = 1e-4) {
    size_t bad = 0, first = 0, n = ref.size();
    double max_abs = 0, worst = 0, num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], d = std::fabs(g - r), bound = rtol * std::fabs(r) + cacc * mag[i];
        bool ok = std::isfinite(g) && d <= bound;
        if (!ok && bad++ == 0) first = i;
        if (std::isfinite(g)) {
            max_abs = std::max(max_abs, d);
            if (bound > 0) worst = std::max(worst, d / bound);
        }
        num += d * d;
        den += r * r;
    }
    double rel = std::sqrt(num / std::max(den, 1e-300));
    if (bad) {
        printf("  FAIL %-44s %zu/%zu outside the bound (first at %zu: got %.6g ref %.6g), max abs err %.3g, rel L2 %.3g\n", name, bad,
               n, first, got[first], ref[first], max_abs, rel);
        return false;
    }
    printf("  ok   %-44s n=%zu max abs err %.3g rel L2 %.3g (worst %.2f of the bound)\n", name, n, max_abs, rel, worst);
    return true;
}

static const double BF16_RTOL = 1.0 / 128;  // 2u (see the top)
static void record(bool ok) { expect(ok); }

// ----------------------------------------------------------------------------
// nn.Linear forward and backward vs matmul_*_cpu

static void check_forward(int N, int IC, int OC, bool relu) {
    std::vector<float> x = rand_bf16((size_t)N * IC), w = rand_bf16((size_t)OC * IC);
    bf16 *dx = dev_bf16(x), *dw = dev_bf16(w), *dout;
    cudaCheck(cudaMalloc(&dout, (size_t)N * OC * sizeof(bf16)));
    poison(dout, (size_t)N * OC);
    matmul_forward(dout, dx, dw, N, IC, OC, 0, relu);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref((size_t)N * OC), mag((size_t)N * OC);
    std::vector<double> xd = to_double(x), wd = to_double(w), xa = abs_double(x), wa = abs_double(w);
    matmul_forward_cpu<double>(ref.data(), xd.data(), wd.data(), N, IC, OC);
    matmul_forward_cpu<double>(mag.data(), xa.data(), wa.data(), N, IC, OC);
    if (relu) for (double &r : ref) r = std::max(r, 0.0);
    char name[128];
    snprintf(name, sizeof name, "forward%s N=%d IC=%d OC=%d", relu ? "+relu" : "", N, IC, OC);
    record(check_bound(name, host_bf16(dout, (size_t)N * OC), ref, mag, BF16_RTOL));
    cudaFreeCheck(dx); cudaFreeCheck(dw); cudaFreeCheck(dout);
}

// accumulate: outputs start from random values and the GEMMs add into them (beta = 1);
// otherwise they start poisoned. which: 3 = both gradients, 1 = dinp only, 2 = dweight only.
static void check_backward(int N, int IC, int OC, bool accumulate, int which = 3) {
    std::vector<float> x = rand_bf16((size_t)N * IC), w = rand_bf16((size_t)OC * IC), dy = rand_bf16((size_t)N * OC);
    std::vector<float> dx0 = rand_bf16((size_t)N * IC), dw0((size_t)OC * IC);
    fill_normal(dw0, 3.f);
    bf16 *d_x = dev_bf16(x), *d_w = dev_bf16(w), *d_dy = dev_bf16(dy), *d_dx = dev_bf16(dx0);
    float *d_dw = dev_f32(dw0);
    if (!accumulate) { poison(d_dx, (size_t)N * IC); poison(d_dw, (size_t)OC * IC); }
    matmul_backward((which & 1) ? d_dx : nullptr, (which & 2) ? d_dw : nullptr, d_dy, d_x, d_w, N, IC, OC, accumulate, accumulate, 0);
    cudaCheck(cudaDeviceSynchronize());
    // references: model_cpu's backward accumulates, so start it from the same initial values
    std::vector<double> rdx((size_t)N * IC, 0.0), rdw((size_t)OC * IC, 0.0), mdx((size_t)N * IC, 0.0), mdw((size_t)OC * IC, 0.0);
    if (accumulate) {
        for (size_t i = 0; i < rdx.size(); i++) { rdx[i] = dx0[i]; mdx[i] = std::fabs(dx0[i]); }
        for (size_t i = 0; i < rdw.size(); i++) { rdw[i] = dw0[i]; mdw[i] = std::fabs(dw0[i]); }
    }
    std::vector<double> xd = to_double(x), wd = to_double(w), dyd = to_double(dy), xa = abs_double(x), wa = abs_double(w), dya = abs_double(dy);
    matmul_backward_cpu<double>(rdx.data(), rdw.data(), dyd.data(), xd.data(), wd.data(), N, IC, OC);
    matmul_backward_cpu<double>(mdx.data(), mdw.data(), dya.data(), xa.data(), wa.data(), N, IC, OC);
    char name[128];
    const char *mode = accumulate ? "+=" : "=";
    if (which & 1) {
        snprintf(name, sizeof name, "backward dinp %s N=%d IC=%d OC=%d", mode, N, IC, OC);
        record(check_bound(name, host_bf16(d_dx, (size_t)N * IC), rdx, mdx, BF16_RTOL));
    } else {  // dinp was null: its buffer must be untouched
        std::vector<float> got = host_bf16(d_dx, (size_t)N * IC);
        bool same = accumulate ? std::equal(got.begin(), got.end(), dx0.begin()) : true;
        if (!accumulate) for (float v : got) same = same && std::isnan(v);
        printf("  %s %-44s\n", same ? "ok  " : "FAIL", "backward with dinp = null leaves it alone");
        record(same);
    }
    if (which & 2) {
        snprintf(name, sizeof name, "backward dW(fp32) %s N=%d IC=%d OC=%d", mode, N, IC, OC);
        record(check_bound(name, host_f32(d_dw, (size_t)OC * IC), rdw, mdw, 1e-6));
    }
    cudaFreeCheck(d_x); cudaFreeCheck(d_w); cudaFreeCheck(d_dy); cudaFreeCheck(d_dx); cudaFreeCheck(d_dw);
}

// ----------------------------------------------------------------------------
// the general strided-batched gemm() vs a plain double loop

static void gemm_ref(std::vector<double> &d, std::vector<double> &mag, const std::vector<float> &a, bool ta, const std::vector<float> &b,
                     bool tb, const std::vector<float> &c, int M, int N, int K, double alpha, double beta, int batch, long long sa,
                     long long sb, long long sd, bool relu) {
#pragma omp parallel for collapse(2)
    for (int z = 0; z < batch; z++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0, m = 0;
                for (int k = 0; k < K; k++) {
                    double av = ta ? a[z * sa + (size_t)k * M + i] : a[z * sa + (size_t)i * K + k];
                    double bv = tb ? b[z * sb + (size_t)j * K + k] : b[z * sb + (size_t)k * N + j];
                    s += av * bv;
                    m += std::fabs(av * bv);
                }
                size_t o = z * sd + (size_t)i * N + j;
                double cv = beta != 0 ? c[o] : 0.0;
                double v = alpha * s + beta * cv;
                d[o] = relu ? std::max(v, 0.0) : v;
                mag[o] = std::fabs(alpha) * m + std::fabs(beta * cv);
            }
}

// batch matrices with padding between them (strides larger than the matrices) to check strides
static void check_gemm(int M, int N, int K, int batch, bool ta, bool tb, bool out_f32, float alpha, float beta, bool separate_c,
                       bool relu) {
    const long long pad = batch > 1 ? 7 : 0;
    const long long sa = (long long)M * K + pad, sb = (long long)K * N + pad, sd = (long long)M * N + pad;
    std::vector<float> a = rand_bf16(sa * batch), b = rand_bf16(sb * batch), c = rand_bf16(sd * batch), d0 = rand_bf16(sd * batch);
    bf16 *da = dev_bf16(a), *db = dev_bf16(b);
    void *dd, *dc = nullptr;
    const size_t es = out_f32 ? 4 : 2, nd = (size_t)sd * batch;
    cudaCheck(cudaMalloc(&dd, nd * es));
    if (out_f32) {
        float *t = dev_f32(separate_c ? d0 : c);
        cudaCheck(cudaMemcpy(dd, t, nd * 4, cudaMemcpyDeviceToDevice));
        cudaFreeCheck(t);
        if (separate_c) dc = dev_f32(c);
    } else {
        bf16 *t = dev_bf16(separate_c ? d0 : c);
        cudaCheck(cudaMemcpy(dd, t, nd * 2, cudaMemcpyDeviceToDevice));
        cudaFreeCheck(t);
        if (separate_c) dc = dev_bf16(c);
    }
    // with beta = 0 the output starts poisoned (C must not be read)
    if (beta == 0.f) cudaCheck(cudaMemset(dd, 0xFF, nd * es));
    gemm(dd, out_f32 ? CUDA_R_32F : CUDA_R_16BF, dc, da, ta, db, tb, M, N, K, alpha, beta, batch, sa, sb, sd,
         relu ? GEMM_EPI_RELU : GEMM_EPI_NONE, 0);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref(nd), mag(nd);
    gemm_ref(ref, mag, a, ta, b, tb, c, M, N, K, alpha, beta, batch, sa, sb, sd, relu);
    std::vector<float> got = out_f32 ? host_f32((float *)dd, nd) : host_bf16((bf16 *)dd, nd);
    // only the matrices are compared; the padding between them must be left alone
    std::vector<float> g2;
    std::vector<double> r2, m2;
    bool pad_ok = true;
    for (int z = 0; z < batch; z++) {
        for (long long i = 0; i < (long long)M * N; i++) {
            g2.push_back(got[z * sd + i]);
            r2.push_back(ref[z * sd + i]);
            m2.push_back(mag[z * sd + i]);
        }
        for (long long i = (long long)M * N; i < sd; i++) {
            float before = separate_c ? d0[z * sd + i] : c[z * sd + i];
            bool was_poison = beta == 0.f;
            pad_ok = pad_ok && (was_poison ? std::isnan(got[z * sd + i]) : got[z * sd + i] == before);
        }
    }
    char name[160];
    snprintf(name, sizeof name, "gemm %s%s M=%d N=%d K=%d b=%d %s a=%g b=%g%s%s", ta ? "T" : "N", tb ? "T" : "N", M, N, K, batch,
             out_f32 ? "f32" : "bf16", alpha, beta, separate_c ? " C" : "", relu ? " relu" : "");
    record(check_bound(name, g2, r2, m2, out_f32 ? 1e-6 : BF16_RTOL));
    if (!pad_ok) printf("  FAIL %-44s wrote between the batch matrices\n", name);
    record(pad_ok);
    cudaFreeCheck(da); cudaFreeCheck(db);
    cudaCheck(cudaFree(dd));
    if (dc) cudaCheck(cudaFree(dc));
}

// a view at an odd element offset (2-byte aligned pointers, odd leading dimensions)
static void check_misaligned(int N, int IC, int OC) {
    std::vector<float> x = rand_bf16((size_t)N * IC + 1), w = rand_bf16((size_t)OC * IC + 1);
    bf16 *dx = dev_bf16(x), *dw = dev_bf16(w), *dout;
    cudaCheck(cudaMalloc(&dout, ((size_t)N * OC + 1) * sizeof(bf16)));
    poison(dout, (size_t)N * OC + 1);
    matmul_forward(dout + 1, dx + 1, dw + 1, N, IC, OC, 0);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> xd(x.begin() + 1, x.end()), wd(w.begin() + 1, w.end()), ref((size_t)N * OC), mag((size_t)N * OC);
    std::vector<double> xa(xd), wa(wd);
    for (double &v : xa) v = std::fabs(v);
    for (double &v : wa) v = std::fabs(v);
    matmul_forward_cpu<double>(ref.data(), xd.data(), wd.data(), N, IC, OC);
    matmul_forward_cpu<double>(mag.data(), xa.data(), wa.data(), N, IC, OC);
    std::vector<float> got = host_bf16(dout, (size_t)N * OC + 1);
    char name[128];
    snprintf(name, sizeof name, "forward, odd offsets N=%d IC=%d OC=%d", N, IC, OC);
    record(check_bound(name, std::vector<float>(got.begin() + 1, got.end()), ref, mag, BF16_RTOL));
    if (!std::isnan(got[0])) { printf("  FAIL %-44s wrote before the output view\n", name); record(false); }
    cudaFreeCheck(dx); cudaFreeCheck(dw); cudaFreeCheck(dout);
}

// same inputs twice -> bitwise the same output (the cached algorithm is reused)
static void check_deterministic(int N, int IC, int OC) {
    std::vector<float> x = rand_bf16((size_t)N * IC), dy = rand_bf16((size_t)N * OC);
    bf16 *d_x = dev_bf16(x), *d_dy = dev_bf16(dy);
    float *dw;
    cudaCheck(cudaMalloc(&dw, (size_t)OC * IC * sizeof(float)));
    std::vector<float> runs[2];
    for (int r = 0; r < 2; r++) {
        matmul_backward(nullptr, dw, d_dy, d_x, nullptr, N, IC, OC, false, false, 0);
        runs[r] = host_f32(dw, (size_t)OC * IC);
    }
    bool same = memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)) == 0;
    printf("  %s %-44s\n", same ? "ok  " : "FAIL", "dW twice: bitwise identical");
    record(same);
    cudaFreeCheck(d_x); cudaFreeCheck(d_dy); cudaFreeCheck(dw);
}

static void run_checks(const char *version) {
    printf("%s\n", version);
    // forward: awkward shapes first, then model-like ones (bigram 128 -> 512, c_k, fc, proj)
    check_forward(333, 96, 130, false);
    check_forward(333, 96, 130, true);
    check_forward(1, 7, 5, false);
    check_forward(517, 128, 512, false);
    check_forward(256, 512, 256, false);
    check_forward(1024, 512, 1536, true);
    check_forward(300, 1536, 512, false);
    // backward
    check_backward(333, 96, 130, false);
    check_backward(333, 96, 130, true);
    check_backward(1, 7, 5, true);
    check_backward(2048, 512, 1536, true);
    check_backward(777, 1536, 512, false);
    check_backward(300, 512, 1024, false, 2);  // tied head's dW alone (dinp null)
    check_backward(300, 130, 96, true, 1);     // dinp alone (dweight null)
    // general strided-batched: the four transpose combinations, both output types
    for (int t = 0; t < 4; t++) {
        check_gemm(130, 96, 333, 3, t & 1, t & 2, false, 1.f, 0.f, false, false);
        check_gemm(130, 96, 333, 3, t & 1, t & 2, true, 0.5f, -0.75f, true, false);
    }
    check_gemm(96, 96, 130, 3, false, true, false, 2.0315f, -4.775f, true, false);  // Newton-Schulz's B = c*A@A + b*A
    check_gemm(64, 130, 64, 2, false, false, false, 1.f, 3.4445f, true, false);    // X' = B@X + a*X
    check_gemm(57, 33, 21, 1, false, false, false, 1.f, 1.f, false, true);         // in-place += with relu
    check_gemm(1, 1, 1, 5, true, true, true, 1.f, 0.f, false, false);
    check_misaligned(45, 33, 17);
    check_deterministic(1000, 96, 130);
}

// ----------------------------------------------------------------------------
// the fused relu^2 GEMMs (version 3)

static int g_skipped = 0;  // rows not run (no sm_90a kernel here), in the closing line

// the rows of an (rows, cols) matrix that the reference computes: all, or (large M) the first
// 256, the last 128 and 256 spread in between
static std::vector<int> sample_rows(int M) {
    std::vector<int> r;
    if (M <= 4096) {
        for (int i = 0; i < M; i++) r.push_back(i);
        return r;
    }
    for (int i = 0; i < 256; i++) r.push_back(i);
    for (int i = 0; i < 256; i++) r.push_back(256 + (int)((long long)i * (M - 512) / 256));
    for (int i = M - 128; i < M; i++) r.push_back(i);
    return r;
}
template <typename T>
static std::vector<T> gather_rows(const std::vector<float> &m, const std::vector<int> &rows, int cols) {
    std::vector<T> g(rows.size() * (size_t)cols);
    for (size_t i = 0; i < rows.size(); i++)
        for (int c = 0; c < cols; c++) g[i * cols + c] = m[(size_t)rows[i] * cols + c];
    return g;
}
static void observe(const char *name, const std::vector<float> &got, const std::vector<double> &ref, const std::vector<double> &bound_abs,
                    double rtol, const char *family = "relu2_gemm") {
    double worst = 0, max_rel = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const double d = std::fabs((double)got[i] - ref[i]), b = rtol * std::fabs(ref[i]) + bound_abs[i];
        if (b > 0) worst = std::max(worst, d / b);
        if (std::fabs(ref[i]) > 1e-3) max_rel = std::max(max_rel, d / std::fabs(ref[i]));
    }
    printf("observed: %s %s worst/bound %.3e max rel err (|ref| > 1e-3) %.3e\n", family, name, worst, max_rel);
}
// the sampled rows of the device output d (M, N), once the launches are done, against ref: one
// check line, one observed line (name: "<family word> <the rest>", e.g. "relu2 fwd ...")
static void check_rows(const char *name, const bf16 *d, int M, int N, const std::vector<int> &rows, const std::vector<double> &ref,
                       const std::vector<double> &babs, double rtol) {
    cudaCheck(cudaDeviceSynchronize());
    const std::vector<float> got = gather_rows<float>(host_bf16(d, (size_t)M * N), rows, N);
    record(check_bound(name, got, ref, babs, rtol, 1.0));
    const bool relu2 = !strncmp(name, "relu2 ", 6);
    observe(relu2 ? name + 6 : name, got, ref, babs, rtol, relu2 ? "relu2_gemm" : "gemm");
}

// forward: out (M, N) = relu(x (M, K) @ w (N, K)^T)^2, fused and unfused, against the double twin
static void check_relu2_forward(int M, int K, int N) {
    char name[128];
    snprintf(name, sizeof name, "relu2 fwd fused M=%d K=%d N=%d", M, K, N);
    std::vector<float> x = rand_bf16((size_t)M * K), w = rand_bf16((size_t)N * K);
    bf16 *dx = dev_bf16(x), *dw = dev_bf16(w), *dout;
    cudaCheck(cudaMalloc(&dout, (size_t)M * N * sizeof(bf16)));
    const bool fused = matmul_relu2_supported(M, K, N, dout, dx, dw);
    if (!fused) {
        printf("  skip %-44s (needs an sm_90 GPU and an sm_90a build)\n", name);
        g_skipped += 2;
    }
    // reference on the sampled rows: u and its magnitude sum, then relu(u)^2 and the bound's abs term
    const std::vector<int> rows = sample_rows(M);
    const int R = (int)rows.size();
    std::vector<double> xs = gather_rows<double>(x, rows, K), wd = to_double(w), xa(xs), wa = abs_double(w);
    for (double &v : xa) v = std::fabs(v);
    std::vector<double> u((size_t)R * N), mag((size_t)R * N), ref((size_t)R * N), babs((size_t)R * N);
    matmul_forward_cpu<double>(u.data(), xs.data(), wd.data(), R, K, N);
    matmul_forward_cpu<double>(mag.data(), xa.data(), wa.data(), R, K, N);
    matmul_relu2_forward_cpu<double>(ref.data(), xs.data(), wd.data(), R, K, N);
    for (size_t i = 0; i < ref.size(); i++) {
        const double e = 1e-4 * mag[i];
        babs[i] = (2 * std::fabs(u[i]) + e) * e;
    }
    for (int v = 0; fused && v < 2; v++) {  // the 128 x 256 kernel, the ping-pong one
        snprintf(name, sizeof name, "relu2 fwd fused v%d M=%d K=%d N=%d", v, M, K, N);
        if (v == 1 && !matmul_relu2_pp_supported(K)) {
            printf("  skip %-44s (K > 512)\n", name);
            g_skipped++;
            continue;
        }
        poison(dout, (size_t)M * N);
        matmul_relu2_forward(dout, dx, dw, M, K, N, 0, v);
        check_rows(name, dout, M, N, rows, ref, babs, 1.0 / 256);
    }
    // the unfused path it replaces (cuBLASLt RELU epilogue, then relu2_forward in place)
    snprintf(name, sizeof name, "relu2 fwd cublas+pass M=%d K=%d N=%d", M, K, N);
    poison(dout, (size_t)M * N);
    matmul_forward(dout, dx, dw, M, K, N, 0, true);
    relu2_forward(dout, dout, (size_t)M * N, 0);
    check_rows(name, dout, M, N, rows, ref, babs, 3.0 / 256);
    cudaFreeCheck(dx); cudaFreeCheck(dw); cudaFreeCheck(dout);
}

// backward: dfc (M, N) = (dy (M, K) @ w (K, N)) * 2 sqrt(h), h = relu(random)^2 in bf16 (about
// half zeros): every fused variant (mlpg::BWD_VARIANTS pipelines) with B N-major
// (matmul_relu2_backward_dx, w as is) and K-major (matmul_relu2_backward_dx_wt, wt = w^T made
// here), each from a poisoned output against the same reference and bound; then the unfused path
static void check_relu2_backward(int M, int K, int N) {
    char name[128];
    std::vector<float> dy = rand_bf16((size_t)M * K), w = rand_bf16((size_t)K * N), h = rand_bf16((size_t)M * N);
    for (float &v : h) v = rbf(v > 0 ? v * v : 0.f);
    // a few h below 2^-64 (bf16 denormals too), where the square roots leave their fast path
    for (size_t i = 101; i < h.size(); i += 997) h[i] = (i / 997) % 2 ? 0x1p-70f : 0x1p-130f;
    std::vector<float> wt((size_t)N * K);  // W^T (N, K): the K-major launcher's operand
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) wt[(size_t)n * K + k] = w[(size_t)k * N + n];
    bf16 *ddy = dev_bf16(dy), *dw = dev_bf16(w), *dwt = dev_bf16(wt), *dh = dev_bf16(h), *dout;
    cudaCheck(cudaMalloc(&dout, (size_t)M * N * sizeof(bf16)));
    const bool fused = matmul_relu2_supported(M, K, N, dout, ddy, dw, dh) && matmul_relu2_supported(M, K, N, dout, ddy, dwt, dh);
    if (!fused) {
        printf("  skip %-44s (needs an sm_90 GPU and an sm_90a build)\n", "relu2 bwd dx fused (every variant)");
        g_skipped += 2 * mlpg::BWD_VARIANTS;
    }
    const std::vector<int> rows = sample_rows(M);
    const int R = (int)rows.size();
    std::vector<double> dys = gather_rows<double>(dy, rows, K), hs = gather_rows<double>(h, rows, N), wd = to_double(w), dya(dys), wa = abs_double(w);
    for (double &v : dya) v = std::fabs(v);
    std::vector<double> ref((size_t)R * N), babs((size_t)R * N);
    matmul_relu2_backward_dx_cpu<double>(ref.data(), dys.data(), wd.data(), hs.data(), R, K, N);
    // magnitude sums: the same twin on |dy|, |w| with h = 1/4 everywhere (its factor 2 sqrt(1/4) = 1)
    std::vector<double> quarter((size_t)R * N, 0.25);
    matmul_relu2_backward_dx_cpu<double>(babs.data(), dya.data(), wa.data(), quarter.data(), R, K, N);
    for (size_t i = 0; i < babs.size(); i++) babs[i] = 2 * std::sqrt(hs[i]) * 1e-4 * babs[i];
    for (int v = 0; fused && v < mlpg::BWD_VARIANTS; v++)
        for (int kmajor = 0; kmajor < 2; kmajor++) {
            snprintf(name, sizeof name, "relu2 bwd dx fused v%d %s M=%d K=%d N=%d", v, kmajor ? "wt" : "w", M, K, N);
            poison(dout, (size_t)M * N);
            if (mlpg::bwd_needs_wt(v) && (!kmajor || !matmul_relu2_pp_supported(K))) {  // (W^T only, K <= 512)
                printf("  skip %-44s (W^T and K <= 512 only)\n", name);
                g_skipped++;
                continue;
            }
            if (kmajor) matmul_relu2_backward_dx_wt(dout, ddy, dwt, dh, M, K, N, 0, v);
            else matmul_relu2_backward_dx(dout, ddy, dw, dh, M, K, N, 0, v);
            check_rows(name, dout, M, N, rows, ref, babs, mlpg::bwd_roundings(v) / 256.0);
        }
    snprintf(name, sizeof name, "relu2 bwd dx cublas+pass M=%d K=%d N=%d", M, K, N);
    poison(dout, (size_t)M * N);
    matmul_backward(dout, nullptr, ddy, nullptr, dw, M, N, K, false, false, 0);
    relu2_backward_from_out(dout, dout, dh, (size_t)M * N, false, 0);
    check_rows(name, dout, M, N, rows, ref, babs, BF16_RTOL);
    cudaFreeCheck(ddy); cudaFreeCheck(dw); cudaFreeCheck(dwt); cudaFreeCheck(dh); cudaFreeCheck(dout);
}

// mlpg::sqrt_rn (the backward's branch-free square root) against sqrtf, bitwise, on every positive
// bf16: the only inputs the backward gives it (h is bf16)
// and mlpg::sqrt_fast (variant 5's common case) the same wherever sqrt_special is false, with
// sqrt_special true on exactly the positive values below 2^-64 and +inf
__global__ void sqrt_rn_check_kernel(unsigned *bad) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const float x = __uint_as_float(i << 16);
    if (x > 0.f && __float_as_uint(mlpg::sqrt_rn(x)) != __float_as_uint(sqrtf(x))) atomicAdd(bad, 1u);
    const bool special = x > 0.f && (x < 0x1p-64f || isinf(x));
    if (mlpg::sqrt_special(x) != special) atomicAdd(bad, 1u);
    if (x > 0.f && !special && __float_as_uint(mlpg::sqrt_fast(x)) != __float_as_uint(sqrtf(x))) atomicAdd(bad, 1u);
}
// mlpg::two_sqrt_rsq (variant 6's factor) against 2 sqrt(h) in double on every bf16 >= 0: 0 at
// h = 0, flagged (!(f < inf)) on exactly the denormals and +inf, elsewhere its relative error
// (the worst, as float bits, into *worst)
__global__ void two_sqrt_rsq_check_kernel(unsigned *bad, unsigned *worst) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i > 0x7f80u) return;
    const float x = __uint_as_float(i << 16), f = mlpg::two_sqrt_rsq(x);
    const bool flag_expected = i > 0 && (i < 0x80u || i == 0x7f80u), flagged = !(f < INFINITY);
    if (flagged != flag_expected || (i == 0 && f != 0.f)) atomicAdd(bad, 1u);
    if (i > 0 && !flag_expected) {
        const double ref = 2.0 * sqrt((double)x), rel = fabs((double)f - ref) / ref;
        atomicMax(worst, __float_as_uint((float)rel));  // (non-negative floats order as their bits)
    }
}
static void check_two_sqrt_rsq() {
    unsigned *d, got[2] = {0, 0};
    cudaCheck(cudaMalloc(&d, 2 * sizeof(unsigned)));
    cudaCheck(cudaMemset(d, 0, 2 * sizeof(unsigned)));
    two_sqrt_rsq_check_kernel<<<0x7f81 / 256 + 1, 256>>>(d, d + 1);
    cudaCheckLaunch();
    cudaCheck(cudaMemcpy(got, d, sizeof got, cudaMemcpyDeviceToHost));
    cudaFreeCheck(d);
    // bound: 2^-20, ~8x the error measured on the H200 (see the observed line)
    float worst;
    memcpy(&worst, &got[1], sizeof worst);
    const float bound = 0x1p-20f;
    printf("  observed: relu2 two_sqrt_rsq max relative error %.3g (bound %.3g)\n", worst, bound);
    const bool ok = got[0] == 0 && worst <= bound;
    if (!ok) printf("  FAIL relu2 two_sqrt_rsq: %u wrong flags or zeros, max relative error %.3g\n", got[0], worst);
    else printf("  ok   relu2 two_sqrt_rsq flags exactly the denormal and infinite bf16, 0 at 0, error within bound\n");
    record(ok);
}
static void check_sqrt_rn() {
    unsigned *d_bad, bad = 0;
    cudaCheck(cudaMalloc(&d_bad, sizeof(unsigned)));
    cudaCheck(cudaMemset(d_bad, 0, sizeof(unsigned)));
    sqrt_rn_check_kernel<<<65536 / 256, 256>>>(d_bad);
    cudaCheckLaunch();
    cudaCheck(cudaMemcpy(&bad, d_bad, sizeof(unsigned), cudaMemcpyDeviceToHost));
    cudaFreeCheck(d_bad);
    if (bad) printf("  FAIL relu2 sqrt_rn, sqrt_fast == sqrtf: %u differences on the positive bf16 values\n", bad);
    else printf("  ok   relu2 sqrt_rn == sqrtf bitwise on every positive bf16 (sqrt_fast where not special)\n");
    record(bad == 0);
}

// ----------------------------------------------------------------------------
// the grouped GEMMs (version 4): several projections of one input in one launch, and their input
// gradients summed in one launch, against matmul_forward_cpu / matmul_backward_cpu per group in
// double. Tolerance per element: rtol |ref| + 1e-4 sum_k |a_ik w_kj| (the sum over every group's
// k for the backward), rtol = 2^-8 (one rounding of the fp32 sum to bf16).

// out_g (M, n[g]) = x (M, K) @ w_g (n[g], K)^T
// variant: matmul_forward_grouped's (0 the 128 x 256 kernel, 1 the ping-pong one)
static void check_grouped_forward(int M, int K, std::vector<int> n, int variant = 0) {
    const int ng = (int)n.size();
    char name[128];
    std::vector<std::vector<float>> w(ng);
    std::vector<float> x = rand_bf16((size_t)M * K);
    bf16 *dx = dev_bf16(x), *dw[mlpg::MAXG], *dout[mlpg::MAXG];
    for (int g = 0; g < ng; g++) {
        w[g] = rand_bf16((size_t)n[g] * K);
        dw[g] = dev_bf16(w[g]);
        cudaCheck(cudaMalloc(&dout[g], (size_t)M * n[g] * sizeof(bf16)));
    }
    std::string dims;
    for (int g = 0; g < ng; g++) dims += (g ? "," : "") + std::to_string(n[g]);
    const char *form = variant ? " pp" : "";
    snprintf(name, sizeof name, "grouped fwd%s M=%d K=%d N=%s", form, M, K, dims.c_str());
    if (!matmul_forward_grouped_supported(dout, dx, dw, n.data(), ng, M, K)) {
        printf("  skip %-44s (needs an sm_90 GPU and an sm_90a build)\n", name);
        g_skipped++;
    } else {
        for (int g = 0; g < ng; g++) poison(dout[g], (size_t)M * n[g]);
        matmul_forward_grouped(dout, dx, dw, n.data(), ng, M, K, 0, variant);
        const std::vector<int> rows = sample_rows(M);
        const int R = (int)rows.size();
        std::vector<double> xs = gather_rows<double>(x, rows, K), xa(xs);
        for (double &v : xa) v = std::fabs(v);
        for (int g = 0; g < ng; g++) {
            std::vector<double> wd = to_double(w[g]), wa = abs_double(w[g]), ref((size_t)R * n[g]), babs((size_t)R * n[g]);
            matmul_forward_cpu<double>(ref.data(), xs.data(), wd.data(), R, K, n[g]);
            matmul_forward_cpu<double>(babs.data(), xa.data(), wa.data(), R, K, n[g]);
            for (double &b : babs) b *= 1e-4;
            snprintf(name, sizeof name, "grouped fwd%s M=%d K=%d N=%s out %d", form, M, K, dims.c_str(), g);
            check_rows(name, dout[g], M, n[g], rows, ref, babs, 1.0 / 256);
        }
    }
    cudaFreeCheck(dx);
    for (int g = 0; g < ng; g++) cudaFreeCheck(dw[g]), cudaFreeCheck(dout[g]);
}

// The q, k, v projections with q and k through the per-head RMSNorm, RoPE and gain in the
// epilogue (matmul_forward_qkv_norm) against the double twins on the sampled rows: u = x W_g^T
// (matmul_forward_cpu); xn and rstd against the normalization of u (qk_norm_rope_gain_forward_cpu's
// first half); out against RoPE and gain of the GPU's own xn as stored (qk_rope_gain_forward_cpu),
// which isolates those from the norm; v as the grouped GEMM; then the eval's form (no xn, no
// rstd) into fresh poisoned outputs, which must give the same q, k, v bit for bit. Bounds, with E the largest
// accumulation bound 1e-4 sum_k |x w| over the head's 64 columns and r = 1 / rms:
//   xn    2^-8 |ref| + r E (1 + |ref|)    (one rounding; rms moves by at most E, a norm's Lipschitz bound)
//   rstd  4e-6 ref                       (6.6x the worst measured, 6.1e-7 on the H200 at K = 512; the
//                                        fp32 sum of 64 squares alone may be off by 64 2^-24 = 3.8e-6)
//   out   2^-8 |ref| + 2^-20 |g| (|y| + |p|)   (one rounding; the fp32 products and sum)
// variant: matmul_forward_qkv_norm's (0 the 128 x 256 kernel, 1 the ping-pong one)
static void check_qkv_norm(int M, int K, std::vector<int> n, int T, int variant) {
    const int hd = 64, half = mlpg::QK_RD / 2;
    char name[160], base[128];
    snprintf(base, sizeof base, "qkv norm v%d M=%d K=%d N=%d,%d,%d T=%d", variant, M, K, n[0], n[1], n[2], T);
    std::vector<std::vector<float>> w(3);
    std::vector<float> x = rand_bf16((size_t)M * K), cs((size_t)T * half), sn((size_t)T * half), gain = rand_bf16(n[0] / hd, 0.3f);
    for (float &g : gain) g = __bfloat162float(__float2bfloat16(1.f + g));
    fill_normal(cs), fill_normal(sn);
    for (size_t i = 0; i < cs.size(); i++) cs[i] = std::tanh(cs[i]), sn[i] = std::tanh(sn[i]);  // table-like values in (-1, 1)
    bf16 *dx = dev_bf16(x), *dw[3], *dout[3], *dxn[2] = {nullptr, nullptr};
    float *drstd[2] = {nullptr, nullptr}, *dcs, *dsn, *dgain;
    cudaCheck(cudaMalloc(&dcs, cs.size() * sizeof(float)));
    cudaCheck(cudaMalloc(&dsn, sn.size() * sizeof(float)));
    cudaCheck(cudaMalloc(&dgain, gain.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(dcs, cs.data(), cs.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(dsn, sn.data(), sn.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(dgain, gain.data(), gain.size() * sizeof(float), cudaMemcpyHostToDevice));
    for (int g = 0; g < 3; g++) {
        w[g] = rand_bf16((size_t)n[g] * K);
        dw[g] = dev_bf16(w[g]);
        cudaCheck(cudaMalloc(&dout[g], (size_t)M * n[g] * sizeof(bf16)));
        poison(dout[g], (size_t)M * n[g]);
        if (g < 2) {
            cudaCheck(cudaMalloc(&dxn[g], (size_t)M * n[g] * sizeof(bf16)));
            cudaCheck(cudaMalloc(&drstd[g], (size_t)M * (n[g] / hd) * sizeof(float)));
            poison(dxn[g], (size_t)M * n[g]);
            poison(drstd[g], (size_t)M * (n[g] / hd));
        }
    }
    if (!matmul_forward_qkv_norm_supported(dout, dx, dw, n.data(), M, K, hd, mlpg::QK_RD)) {
        printf("  skip %-44s (needs an sm_90 GPU and an sm_90a build)\n", base);
        g_skipped++;
    } else {
        matmul_forward_qkv_norm(dout, dxn, drstd, dx, dw, n.data(), M, K, dcs, dsn, dgain, T, (float)RMS_EPS, 0, variant);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<int> rows = sample_rows(M);
        const int R = (int)rows.size();
        std::vector<double> xs = gather_rows<double>(x, rows, K), xa(xs);
        for (double &v : xa) v = std::fabs(v);
        // the tables at each sampled row's position: row i of the twin's (T = R) tables
        std::vector<double> cs_r((size_t)R * half), sn_r((size_t)R * half);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < half; j++)
                cs_r[(size_t)i * half + j] = cs[(size_t)(rows[i] % T) * half + j], sn_r[(size_t)i * half + j] = sn[(size_t)(rows[i] % T) * half + j];
        for (int g = 0; g < 3; g++) {
            const int NH = n[g] / hd;
            std::vector<double> wd = to_double(w[g]), wa = abs_double(w[g]), u((size_t)R * n[g]), mag((size_t)R * n[g]);
            matmul_forward_cpu<double>(u.data(), xs.data(), wd.data(), R, K, n[g]);
            matmul_forward_cpu<double>(mag.data(), xa.data(), wa.data(), R, K, n[g]);
            for (double &b : mag) b *= 1e-4;
            if (g == 2) {
                snprintf(name, sizeof name, "%s v", base);
                check_rows(name, dout[g], M, n[g], rows, u, mag, 1.0 / 256);
                continue;
            }
            // the normalization in double: xn_ref, rstd_ref; E per head-row
            std::vector<double> xn_ref((size_t)R * n[g]), rs_ref((size_t)R * NH), out_ref((size_t)R * n[g]), dummy((size_t)R * NH);
            std::vector<double> gd(gain.begin(), gain.end());
            qk_norm_rope_gain_forward_cpu<double>(out_ref.data(), xn_ref.data(), rs_ref.data(), u.data(), cs_r.data(), sn_r.data(),
                                                  g == 0 ? gd.data() : nullptr, 1, R, NH, hd, mlpg::QK_RD);
            std::vector<double> E((size_t)R * NH, 0.0);
            for (size_t hr = 0; hr < E.size(); hr++)
                for (int c = 0; c < hd; c++) E[hr] = std::max(E[hr], mag[hr * hd + c]);
            // out against RoPE and gain of the xn the GPU used (as stored)
            const std::vector<float> xn_got = gather_rows<float>(host_bf16(dxn[g], (size_t)M * n[g]), rows, n[g]);
            std::vector<double> y(xn_got.begin(), xn_got.end()), oref((size_t)R * n[g]), ob((size_t)R * n[g]);
            qk_rope_gain_forward_cpu<double>(oref.data(), y.data(), cs_r.data(), sn_r.data(), g == 0 ? gd.data() : nullptr, 1, R, NH, hd,
                                             mlpg::QK_RD);
            for (size_t i = 0; i < ob.size(); i++) {
                const int c = (int)(i % hd), pc = c < half ? c + half : c < 2 * half ? c - half : c;
                const double gg = g == 0 ? gd[(i / hd) % NH] : 1.0;
                ob[i] = 0x1p-20 * std::fabs(gg) * (std::fabs(y[i]) + (pc != c ? std::fabs(y[i - c + pc]) : 0.0));
            }
            snprintf(name, sizeof name, "%s %s out", base, g ? "k" : "q");
            check_rows(name, dout[g], M, n[g], rows, oref, ob, 1.0 / 256);
            std::vector<double> xb((size_t)R * n[g]);
            for (size_t i = 0; i < xb.size(); i++) {
                const size_t hr = i / hd;
                xb[i] = rs_ref[hr] * E[hr] * (1 + std::fabs(xn_ref[i]));
            }
            snprintf(name, sizeof name, "%s %s xn", base, g ? "k" : "q");
            check_rows(name, dxn[g], M, n[g], rows, xn_ref, xb, 1.0 / 256);
            const std::vector<float> rs_got = gather_rows<float>(host_f32(drstd[g], (size_t)M * NH), rows, NH);
            const std::vector<double> rb(rs_ref.size(), 0.0);
            snprintf(name, sizeof name, "%s %s rstd", base, g ? "k" : "q");
            record(check_bound(name, rs_got, rs_ref, rb, 4e-6, 1.0));
            observe(name, rs_got, rs_ref, rb, 4e-6, "gemm");
        }
        // the eval's form: no xn, no rstd; q, k, v bit for bit the same
        std::vector<std::vector<float>> first(3);
        bf16 *dout2[3], *const none[2] = {nullptr, nullptr};
        float *const no_rstd[2] = {nullptr, nullptr};
        for (int g = 0; g < 3; g++) {
            first[g] = host_bf16(dout[g], (size_t)M * n[g]);
            cudaCheck(cudaMalloc(&dout2[g], (size_t)M * n[g] * sizeof(bf16)));
            poison(dout2[g], (size_t)M * n[g]);
        }
        matmul_forward_qkv_norm(dout2, none, no_rstd, dx, dw, n.data(), M, K, dcs, dsn, dgain, T, (float)RMS_EPS, 0, variant);
        cudaCheck(cudaDeviceSynchronize());
        size_t diff = 0;
        for (int g = 0; g < 3; g++) {
            const std::vector<float> again = host_bf16(dout2[g], (size_t)M * n[g]);
            diff += memcmp(again.data(), first[g].data(), again.size() * sizeof(float)) != 0;
            cudaFreeCheck(dout2[g]);
        }
        printf("  %s %-44s q, k, v without xn and rstd bit for bit as with them (%zu outputs differ)\n", diff ? "FAIL" : "ok  ", base, diff);
        record(diff == 0);
    }
    cudaFreeCheck(dx), cudaFreeCheck(dcs), cudaFreeCheck(dsn), cudaFreeCheck(dgain);
    for (int g = 0; g < 3; g++) cudaFreeCheck(dw[g]), cudaFreeCheck(dout[g]);
    for (int g = 0; g < 2; g++)
        cudaFreeCheck(dxn[g]), cudaFreeCheck(drstd[g]);
}

// dinp (M, N) = sum_g dout_g (M, k[g]) @ w_g (k[g], N)
static void check_grouped_backward(int M, int N, std::vector<int> k) {
    const int ng = (int)k.size();
    char name[128];
    std::vector<std::vector<float>> dy(ng), w(ng);
    bf16 *ddy[mlpg::MAXG], *dw[mlpg::MAXG], *dout;
    cudaCheck(cudaMalloc(&dout, (size_t)M * N * sizeof(bf16)));
    std::string dims;
    for (int g = 0; g < ng; g++) {
        dy[g] = rand_bf16((size_t)M * k[g]);
        w[g] = rand_bf16((size_t)k[g] * N);
        ddy[g] = dev_bf16(dy[g]);
        dw[g] = dev_bf16(w[g]);
        dims += (g ? "," : "") + std::to_string(k[g]);
    }
    snprintf(name, sizeof name, "grouped dinp M=%d N=%d K=%s", M, N, dims.c_str());
    if (!matmul_backward_dinp_grouped_supported(dout, ddy, dw, k.data(), ng, M, N)) {
        printf("  skip %-44s (needs an sm_90 GPU and an sm_90a build)\n", name);
        g_skipped++;
    } else {
        poison(dout, (size_t)M * N);
        matmul_backward_dinp_grouped(dout, ddy, dw, k.data(), ng, M, N, 0);
        const std::vector<int> rows = sample_rows(M);
        const int R = (int)rows.size();
        std::vector<double> ref((size_t)R * N, 0.0), babs((size_t)R * N, 0.0);
        for (int g = 0; g < ng; g++) {  // the twin adds: the sum of the groups' products, and of their magnitudes
            std::vector<double> dys = gather_rows<double>(dy[g], rows, k[g]), dya(dys), wd = to_double(w[g]), wa = abs_double(w[g]);
            for (double &v : dya) v = std::fabs(v);
            matmul_backward_cpu<double>(ref.data(), nullptr, dys.data(), nullptr, wd.data(), R, N, k[g]);
            matmul_backward_cpu<double>(babs.data(), nullptr, dya.data(), nullptr, wa.data(), R, N, k[g]);
        }
        for (double &b : babs) b *= 1e-4;
        check_rows(name, dout, M, N, rows, ref, babs, 1.0 / 256);
    }
    cudaFreeCheck(dout);
    for (int g = 0; g < ng; g++) cudaFreeCheck(ddy[g]), cudaFreeCheck(dw[g]);
}

static void run_grouped_checks() {
    printf("version 4: grouped GEMMs (Hopper): q, k, v in one launch, their input gradients in one\n");
    // the seed's q, k, v (+77 rows: a partial last row tile); partial n-tiles (320 = 256 + 64);
    // one group; two groups
    for (int v = 0; v < 2; v++) {
        check_qkv_norm(98304, 512, {512, 256, 256}, 2048, v);
        check_qkv_norm(2000, 192, {320, 192, 64}, 1000, v);  // partial n-tiles: 5 q heads, 3 k heads
        check_qkv_norm(1200, 64, {128, 64, 128}, 300, v);
        // for the ping-pong kernel: CTAs of one tile (consumer 1 idle), a partial 64-column n-block;
        // then 16 n-blocks of 8 CTAs over 37 row tiles (4 or 5 a CTA), the last one partial (78 rows)
        check_qkv_norm(300, 128, {192, 64, 64}, 100, v);
        check_qkv_norm(4686, 512, {1024, 512, 512}, 2343, v);
    }
    check_grouped_forward(98304 + 77, 512, {512, 256, 256});
    check_grouped_forward(1000, 192, {64, 320, 128});
    check_grouped_forward(77, 64, {128});
    check_grouped_forward(3000, 576, {256, 192});
    // the ping-pong form (K <= 512): one group as the attention projection runs it (an n-block of
    // 128 columns per 33 CTAs), a partial n-block of 64 columns, rows past a tile, several groups
    check_grouped_forward(98304 + 77, 512, {512}, 1);
    check_grouped_forward(1000, 192, {64, 320, 128}, 1);
    check_grouped_forward(77, 64, {128}, 1);
    check_grouped_forward(3000, 448, {192, 256}, 1);
    check_grouped_backward(98304 + 77, 512, {512, 256, 256});
    check_grouped_backward(1000, 320, {64, 192, 128});
    check_grouped_backward(130, 64, {576});
    check_grouped_backward(3000, 192, {128, 256});
}

static void run_relu2_checks() {
    printf("version 3: relu^2 fused into the fc GEMM (Hopper) and the cuBLASLt + pass it replaces\n");
    check_sqrt_rn();
    check_two_sqrt_rsq();
    const int shapes[][3] = {{1, 64, 64}, {77, 512, 192}, {130, 576, 320}, {1000, 64, 1536}, {1000, 512, 1536},
                             // several tiles a CTA at 1 and 3 k-blocks (the ring's phases wrap within a tile)
                             {9000, 64, 320}, {20000, 192, 576}, {98304 + 77, 512, 1536}};
    for (const auto &s : shapes) check_relu2_forward(s[0], s[1], s[2]);
    for (const auto &s : shapes) check_relu2_backward(s[0], s[1], s[2]);
}

// ----------------------------------------------------------------------------
// benchmarks at the seed shapes (one H200 micro-batch: N = 48 x 2048 tokens)

// Newton-Schulz coefficients for the batched rows (optim.cuh has the shipping ones)
static const float NS_A_BENCH = 3.4445f, NS_B_BENCH = -4.7750f, NS_C_BENCH = 2.0315f;

// relu2_only: only the relu^2 rows (dev_matmul --relu2-only)
static void bench(bool relu2_only) {
    const int N = 48 * 2048;
    struct Lin { const char *name; int IC, OC; };
    const Lin lins[] = {{"c_q / attn.proj", 512, 512}, {"c_k / c_v", 512, 256}, {"mlp.fc", 512, 1536}, {"mlp.proj", 1536, 512},
                        {"head (tied)", 512, 1024}, {"bigram.proj", 128, 512}};
    size_t max_in = 0, max_out = 0, max_w = 0;
    for (const Lin &l : lins) {
        max_in = std::max(max_in, (size_t)N * l.IC);
        max_out = std::max(max_out, (size_t)N * l.OC);
        max_w = std::max(max_w, (size_t)l.IC * l.OC);
    }
    bf16 *x, *y, *dy, *dx, *w;
    float *dw;
    cudaCheck(cudaMalloc(&x, max_in * sizeof(bf16)));
    cudaCheck(cudaMalloc(&dx, max_in * sizeof(bf16)));
    cudaCheck(cudaMalloc(&y, max_out * sizeof(bf16)));
    cudaCheck(cudaMalloc(&dy, max_out * sizeof(bf16)));
    cudaCheck(cudaMalloc(&w, max_w * sizeof(bf16)));
    cudaCheck(cudaMalloc(&dw, max_w * sizeof(float)));
    {  // random operands (zeros would flatter the tensor cores' power draw)
        std::vector<float> h(std::max(max_in, max_out));
        fill_normal(h);
        to_device_bf16(x, h.data(), max_in);
        to_device_bf16(dy, h.data(), max_out);
        to_device_bf16(w, h.data(), max_w);
        cudaCheck(cudaMemset(dw, 0, max_w * sizeof(float)));
    }
    printf("benchmarks (N = %d tokens; target >= 600 TFLOP/s for the large GEMMs)\n", N);
    char shape[64];
    for (const Lin &l : lins) {
        if (relu2_only) break;
        const double flops = 2.0 * N * l.IC * l.OC;
        snprintf(shape, sizeof shape, "%d x %d -> %d", N, l.IC, l.OC);
        char kname[64];
        snprintf(kname, sizeof kname, "fwd %s", l.name);
        bench_row(kname, shape, bench_ms([&] { matmul_forward(y, x, w, N, l.IC, l.OC, 0); }), 0, flops);
        snprintf(kname, sizeof kname, "bwd dinp %s", l.name);
        bench_row(kname, shape, bench_ms([&] { matmul_backward(dx, nullptr, dy, x, w, N, l.IC, l.OC, false, false, 0); }), 0, flops);
        snprintf(kname, sizeof kname, "bwd dW+= %s", l.name);
        bench_row(kname, shape, bench_ms([&] { matmul_backward(nullptr, dw, dy, x, w, N, l.IC, l.OC, false, true, 0); }), 0, flops);
    }
    if (!relu2_only) {  // the attention projection's two GEMMs (forward, and d y in the backward) on the ping-pong kernel
        bf16 *const outs[1] = {y};
        const bf16 *const ws[1] = {w};
        const int n[1] = {512};
        if (matmul_forward_grouped_supported(outs, x, ws, n, 1, N, 512))
            bench_row("fwd attn.proj: ping-pong", "98304 x 512 -> 512",
                      bench_ms([&] { matmul_forward_grouped(outs, x, ws, n, 1, N, 512, 0, 1); }), 0, 2.0 * N * 512 * 512);
    }
    if (!relu2_only) bench_row("fwd mlp.fc + relu", "98304 x 512 -> 1536",
              bench_ms([&] { matmul_forward(y, x, w, N, 512, 1536, 0, true); }), 0, 2.0 * N * 512 * 1536);
    // the MLP's relu^2 around the fc GEMM: unfused (cuBLASLt + elementwise pass) and fused (Hopper)
    {
        const size_t NF = (size_t)N * 1536;
        const double fl = 2.0 * N * 512 * 1536;
        check_internal(NF <= max_in && NF <= max_out);
        bench_row("fc+relu2: cublas + pass", "98304 x 512 -> 1536", bench_ms([&] {
                      matmul_forward(y, x, w, N, 512, 1536, 0, true);
                      relu2_forward(y, y, NF, 0);
                  }), 0, fl);
        if (matmul_relu2_supported(N, 512, 1536, y, x, w))
            for (int v = 1; v >= 0; v--)  // (v0 last: y keeps its relu^2 for the backward's rows below)
                bench_row(v ? "fc+relu2: fused, ping-pong" : "fc+relu2: fused", "98304 x 512 -> 1536",
                          bench_ms([&] { matmul_relu2_forward(y, x, w, N, 512, 1536, 0, v); }), 0, fl);
        else printf("  skip  fc+relu2: fused (needs an sm_90 GPU and an sm_90a build)\n");
        // y now holds relu^2 (h); dx = dfc, dy = d mlp_out (N, 512), w = proj's (512, 1536)
        bench_row("dfc: cublas + pass", "98304 x 512 -> 1536", bench_ms([&] {
                      matmul_backward(dx, nullptr, dy, nullptr, w, N, 1536, 512, false, false, 0);
                      relu2_backward_from_out(dx, dx, y, NF, false, 0);
                  }), 0, fl);
        // every backward variant, B N-major (w as the (512, 1536) proj weight) and K-major (the same
        // buffer read as wt (1536, 512): other numbers, the same work); the default is "dfc: fused"
        if (matmul_relu2_supported(N, 512, 1536, dx, dy, w, y)) {
            bench_row("dfc: fused", "98304 x 512 -> 1536", bench_ms([&] { matmul_relu2_backward_dx(dx, dy, w, y, N, 512, 1536, 0); }), 0,
                      fl);
            for (int v = 0; v < mlpg::BWD_VARIANTS; v++)
                for (int kmajor = 0; kmajor < 2; kmajor++) {
                    char kname[64];
                    snprintf(kname, sizeof kname, "dfc: fused v%d %s", v, kmajor ? "wt (K-major B)" : "w (N-major B)");
                    if (!kmajor && mlpg::bwd_needs_wt(v)) continue;
                    bench_row(kname, "98304 x 512 -> 1536", bench_ms([&] {
                                  if (kmajor) matmul_relu2_backward_dx_wt(dx, dy, w, y, N, 512, 1536, 0, v);
                                  else matmul_relu2_backward_dx(dx, dy, w, y, N, 512, 1536, 0, v);
                              }), 0, fl);
                }
        } else printf("  skip  dfc: fused (needs an sm_90 GPU and an sm_90a build)\n");
    }
    // the q, k, v projections (N = 512 + 256 + 256) and their input gradients: three cuBLASLt GEMMs
    // (the last two of the input gradient adding into the first's output) against one grouped GEMM
    {
        const size_t M = N;
        const int n[3] = {512, 256, 256};
        bf16 *outs[3] = {y, y + M * 512, y + M * 768}, *douts[3] = {dy, dy + M * 512, dy + M * 768};
        bf16 *ws[3] = {w, w + 512 * 512, w + 768 * 512};
        check_internal(M * 1024 <= max_out && (size_t)1024 * 512 <= max_w);
        const double fl = 2.0 * N * 512 * 1024;
        bench_row("qkv fwd: cublas x3", "98304 x 512 -> 1024", bench_ms([&] {
                      for (int g = 0; g < 3; g++) matmul_forward(outs[g], x, ws[g], N, 512, n[g], 0);
                  }), 0, fl);
        bench_row("qkv dinp: cublas x3 (+=)", "98304 x 1024 -> 512", bench_ms([&] {
                      for (int g = 0; g < 3; g++) matmul_backward(dx, nullptr, douts[g], nullptr, ws[g], N, 512, n[g], g > 0, false, 0);
                  }), 0, fl);
        if (matmul_forward_grouped_supported(outs, x, ws, n, 3, N, 512) &&
            matmul_backward_dinp_grouped_supported(dx, douts, ws, n, 3, N, 512)) {
            bench_row("qkv fwd: grouped", "98304 x 512 -> 1024", bench_ms([&] { matmul_forward_grouped(outs, x, ws, n, 3, N, 512, 0); }),
                      0, fl);
            bench_row("qkv dinp: grouped", "98304 x 1024 -> 512",
                      bench_ms([&] { matmul_backward_dinp_grouped(dx, douts, ws, n, 3, N, 512, 0); }), 0, fl);
            // the training forward's q/k path: the grouped GEMM then the two q/k passes, against
            // the fused epilogue (both writing q, k, qn, kn and the rstds; zero tables: the same work)
            const int T = 2048;
            bf16 *qk_out[2], *qk_xn[2];
            float *qk_rstd[2], *tab, *gain;
            for (int g = 0; g < 2; g++) {
                cudaCheck(cudaMalloc(&qk_out[g], M * n[g] * sizeof(bf16)));
                cudaCheck(cudaMalloc(&qk_xn[g], M * n[g] * sizeof(bf16)));
                cudaCheck(cudaMalloc(&qk_rstd[g], M * (n[g] / 64) * sizeof(float)));
            }
            cudaCheck(cudaMalloc(&tab, (size_t)T * mlpg::QK_RD / 2 * sizeof(float)));
            cudaCheck(cudaMalloc(&gain, 8 * sizeof(float)));
            cudaCheck(cudaMemset(tab, 0, (size_t)T * mlpg::QK_RD / 2 * sizeof(float)));
            cudaCheck(cudaMemset(gain, 0, 8 * sizeof(float)));
            bench_row("qkv fwd + q/k passes: grouped", "98304 x 512 -> 1024", bench_ms([&] {
                          matmul_forward_grouped(outs, x, ws, n, 3, N, 512, 0);
                          qk_norm_rope_gain_forward(qk_out[0], qk_xn[0], qk_rstd[0], outs[0], tab, tab, gain, N / T, T, 8, 64,
                                                    mlpg::QK_RD, 0);
                          qk_norm_rope_gain_forward(qk_out[1], qk_xn[1], qk_rstd[1], outs[1], tab, tab, nullptr, N / T, T, 4, 64,
                                                    mlpg::QK_RD, 0);
                      }), 0, fl);
            bf16 *const fused_out[3] = {qk_out[0], qk_out[1], outs[2]};
            for (int v = 0; v < 2; v++)
                bench_row(v ? "qkv fwd + q/k: fused, ping-pong" : "qkv fwd + q/k: fused epilogue", "98304 x 512 -> 1024", bench_ms([&] {
                              matmul_forward_qkv_norm(fused_out, qk_xn, qk_rstd, x, ws, n, N, 512, tab, tab, gain, T, (float)RMS_EPS, 0, v);
                          }), 0, fl);
            bench_row("qkv fwd + q/k: ping-pong, rstd, no xn", "98304 x 512 -> 1024", bench_ms([&] {
                          bf16 *const no_xn[2] = {nullptr, nullptr};  // the training forward's form (the backward reads out)
                          matmul_forward_qkv_norm(fused_out, no_xn, qk_rstd, x, ws, n, N, 512, tab, tab, gain, T, (float)RMS_EPS, 0, 1);
                      }), 0, fl);
            bench_row("qkv fwd + q/k: ping-pong, eval", "98304 x 512 -> 1024", bench_ms([&] {
                          bf16 *const no_xn[2] = {nullptr, nullptr};
                          float *const no_rs[2] = {nullptr, nullptr};
                          matmul_forward_qkv_norm(fused_out, no_xn, no_rs, x, ws, n, N, 512, tab, tab, gain, T, (float)RMS_EPS, 0, 1);
                      }), 0, fl);
            for (int g = 0; g < 2; g++) cudaFreeCheck(qk_out[g]), cudaFreeCheck(qk_xn[g]), cudaFreeCheck(qk_rstd[g]);
            cudaFreeCheck(tab), cudaFreeCheck(gain);
        } else printf("  skip  qkv: grouped (needs an sm_90 GPU and an sm_90a build)\n");
    }
    // Newton-Schulz-like batched GEMMs: 11 matrices of 512 x 1536 (the fc / mlp.proj group)
    if (!relu2_only) {
        const int B = 11, m = 512, n = 1536;
        const long long sx = (long long)m * n, sa = (long long)m * m;
        bf16 *A = y, *Bm = y + B * sa, *Y = dx;  // scratch views (sizes fit: checked below)
        check_internal((size_t)2 * B * sa <= max_out && (size_t)B * sx <= max_in);
        bench_row("NS A = X X^T (batch 11)", "512 x 1536", bench_ms([&] {
                      gemm(A, CUDA_R_16BF, nullptr, x, false, x, true, m, m, n, 1.f, 0.f, B, sx, sx, sa, GEMM_EPI_NONE, 0);
                  }), 0, 2.0 * B * m * m * n);
        bench_row("NS B = cAA + bA (batch 11)", "512 x 512", bench_ms([&] {
                      gemm(Bm, CUDA_R_16BF, A, A, false, A, false, m, m, m, NS_C_BENCH, NS_B_BENCH, B, sa, sa, sa, GEMM_EPI_NONE, 0);
                  }), 0, 2.0 * B * m * m * m);
        bench_row("NS Y = B X + aX (batch 11)", "512 x 1536", bench_ms([&] {
                      gemm(Y, CUDA_R_16BF, x, Bm, false, x, false, m, n, m, 1.f, NS_A_BENCH, B, sa, sx, sx, GEMM_EPI_NONE, 0);
                  }), 0, 2.0 * B * m * m * n);
    }
    cudaFreeCheck(x); cudaFreeCheck(dx); cudaFreeCheck(y); cudaFreeCheck(dy); cudaFreeCheck(w); cudaFreeCheck(dw);
}

int main(int argc, char **argv) {
    bool do_bench = true, relu2_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-bench")) do_bench = false;
        else if (!strcmp(argv[i], "--relu2-only")) relu2_only = true;
        else fatal_config("dev_matmul: unknown argument %s (usage: dev_matmul [--no-bench] [--relu2-only])", argv[i]);
    }
    DeviceInfo dev = device_info();
    printf("dev_matmul on %s (sm_%d%d, %d SMs)\n", dev.name, dev.cc_major, dev.cc_minor, dev.sm_count);
    if (relu2_only) {
        printf("versions 1, 2 left out (--relu2-only): 2 check groups skipped\n");
        g_skipped += 2;
    } else {
        run_checks("version 1: cuBLASLt");
        matmul_context().force_fallback = true;
        run_checks("version 2: fallback kernel");
        matmul_context().force_fallback = false;
    }
    run_relu2_checks();
    run_grouped_checks();
    if (check_verdict("dev_matmul", g_skipped)) return 1;
    if (do_bench) bench(relu2_only);
    matmul_teardown();
    return 0;
}
