// dev/layers.cu: checks and benchmarks of the memory-bound layers (common/layers.cuh) against
// their CPU twins (common/model_cpu.h).
//
// Version 0 of every kernel is the shipping launcher, #included from common/ (no copies here).
// (resid_mix_rmsnorm_forward and residual_scale_rmsnorm_forward are checked against two CPU
// twins in a row.) For each family, at several shapes (awkward ones on purpose: N = 1, N = 333, C = 96, rows longer
// than the register caches, more than 2048 channels (channel slices), T = 1030 for the NTK RoPE
// branch, head_dim 32 / 64 / 96, rope dims 4 / 16 / all), fresh random inputs are rounded to bf16
// and given to both the GPU and the CPU reference (in float, on the same rounded values).
// Outputs are poisoned with NaN first, or pre-filled with random values when the launcher
// accumulates, then compared with validate():
//   bf16 outputs: rtol 1e-2 (bf16 keeps 8 bits), atol 1e-3 * rms(ref) (values that cancel);
//   fp32 parameter gradients (sums over rows): rtol 1e-3, atol 1e-4 * max|ref| (summation order);
//   the embedding scatter-add (fp32): rtol 1e-4, atol 1e-5 * max|ref| against a double reference;
//   fp32 rstd: rtol 1e-5; integer outputs: exact.
// Determinism: the embedding scatter-add and every per-channel reduction run twice and must
// agree bit for bit. q/k: every shape runs on the head-row kernels (v2) and, where it fits, the
// token-row kernels (v3, the default), each against the CPU twins, and v3's outputs must equal
// v2's bit for bit (dgain aside: another summation order); the benchmark times both. v3's backward
// runs in both its forms (QK3_BWD), which must agree bit for bit, dgain and its per-block
// partials included; the benchmark times both forms at q's and k's shapes. The q/k
// backward from attention's fp32 dQ accumulator (qk_norm_rope_gain_backward_from_acc) must give,
// bit for bit, what attention's dq pass followed by the bf16 backward gives (dinp and dgain).
// rmsnorm_resid_mix_backward: every shape runs version 1 (reads ln) and 2 (rebuilds ln from resid
// and x0, the default) on the forward's ln, each against the CPU twins (the skip parts against the
// unfused launchers), and version 2's outputs must equal version 1's bit for bit; the benchmark
// times both. Then benchmark rows at the seed shapes (B=48, T=2048, D=512, KV dim 256,
// F=1536, V=1024, bigram 10240 x 128) against the 4.3 TB/s copy bandwidth.
//
//   make build/dev_layers && ./build/dev_layers       exit status 0 = every check passed
//   ./build/dev_layers --no-bench                      checks only
#include <cstring>

#include "check.cuh"
#include "../common/attention.cuh"  // attention_backward_dq_convert: the dq pass the q/k backward from fp32 replaces
#include "../common/layers.cuh"
#include "../common/model_cpu.h"

// ----------------------------------------------------------------------------
// host helpers

// n normal values rounded to bf16
static std::vector<float> randn(size_t n, float std = 1.f, float mean = 0.f) {
    std::vector<float> v(n);
    fill_normal(v, std, mean);
    for (float &x : v) x = rbf(x);
    return v;
}
static double rms(const std::vector<float> &v) {
    double s = 0;
    for (float x : v) s += (double)x * x;
    return v.empty() ? 0 : std::sqrt(s / v.size());
}
static double maxabs(const std::vector<float> &v) {
    double m = 0;
    for (float x : v) m = std::max(m, (double)std::fabs(x));
    return m;
}

static void put(DevBuf<bf16> &d, const std::vector<float> &h) { to_device_bf16(d.p, h.data(), h.size()); }
static void put(DevBuf<float> &d, const std::vector<float> &h) {
    cudaCheck(cudaMemcpy(d.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}
static void put(DevBuf<int> &d, const std::vector<int> &h) {
    cudaCheck(cudaMemcpy(d.p, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
}
static std::vector<float> get(const DevBuf<bf16> &d, size_t n) {
    std::vector<float> h(n);
    from_device_bf16(h.data(), d.p, n);
    return h;
}
static std::vector<float> get(const DevBuf<float> &d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
static std::vector<int> get(const DevBuf<int> &d, size_t n) {
    std::vector<int> h(n);
    cudaCheck(cudaMemcpy(h.data(), d.p, n * sizeof(int), cudaMemcpyDeviceToHost));
    return h;
}

static bool check_bf16(const char *name, const std::vector<float> &got, const std::vector<float> &ref) {
    return validate(name, got.data(), ref.data(), ref.size(), 1e-2, 1e-3 * rms(ref) + 1e-30);
}
// one bf16 ulp at |x| (2^(e - 7) for |x| in [2^e, 2^(e+1)); the smallest normal's below it)
static float bf16_ulp(float x) {
    int e;
    std::frexp(std::max(std::fabs(x), 1.17549435e-38f), &e);  // |x| = m 2^e, m in [0.5, 1)
    return std::ldexp(1.f, e - 8);
}
// check_bf16 with a per-element allowance added to the bound (an intermediate's rounding that
// can land on either side on the GPU and the CPU); prints the worst error / bound as an
// observed line
static bool check_bf16_plus(const char *name, const std::vector<float> &got, const std::vector<float> &ref,
                            const std::vector<float> &extra) {
    const double atol = 1e-3 * rms(ref) + 1e-30;
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t e = 0; e < ref.size(); e++) {
        const double bound = atol + 1e-2 * std::fabs(ref[e]) + extra[e], err = std::fabs((double)got[e] - ref[e]);
        if (!(err <= bound)) {  // NaN fails
            if (!bad) first = e;
            bad++;
        }
        if (err / bound > worst) worst = err / bound;
    }
    if (bad)
        printf("  FAIL %-28s %zu/%zu outside the bound (first at %zu: got %g ref %g extra %g)\n", name, bad, ref.size(), first,
               got[first], ref[first], extra[first]);
    else
        printf("  ok   %-28s n=%zu worst err / bound %.3f (bound: check_bf16's + one bf16 ulp of the intermediate)\n", name,
               ref.size(), worst);
    return bad == 0;
}
static bool check_sum(const char *name, const std::vector<float> &got, const std::vector<float> &ref) {
    return validate(name, got.data(), ref.data(), ref.size(), 1e-3, 1e-4 * maxabs(ref) + 1e-30);
}
static bool check_exact(const char *name, const std::vector<float> &a, const std::vector<float> &b) {
    const bool same = a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    printf("  %s %-28s bitwise identical on a second run\n", same ? "ok  " : "FAIL", name);
    return same;
}

// one scratch for every launcher (sized for the largest shapes used below)
static DeviceScratch g_scratch;
static void scratch_init() {
    g_scratch.bytes = layers_scratch_bytes(98304, 4200, 10240);
    cudaCheck(cudaMalloc(&g_scratch.ptr, g_scratch.bytes));
}

// ----------------------------------------------------------------------------
// embeddings

static void test_bigram_hash(int B, int T, int buckets, int max_id) {
    printf("bigram_hash B=%d T=%d buckets=%d ids<%d\n", B, T, buckets, max_id);
    const int N = B * T;
    std::vector<int> ids(N), ref(N);
    fill_uniform_int(ids, 0, max_id);
    bigram_hash_cpu(ref.data(), ids.data(), B, T, buckets);
    DevBuf<int> d_ids(N), d_h(N);
    put(d_ids, ids);
    cudaCheck(cudaMemset(d_h.p, 0xFF, N * sizeof(int)));
    bigram_hash(d_h.p, d_ids.p, B, T, buckets, 0);
    std::vector<int> got = get(d_h, N);
    size_t bad = 0;
    for (int n = 0; n < N; n++) bad += got[n] != ref[n];
    printf("  %s %-28s %zu/%d mismatches\n", bad ? "FAIL" : "ok  ", "h", bad, N);
    expect(bad == 0);
}

template <typename Tw>
static void test_embedding_forward(int N, int C, int rows) {
    printf("embedding_forward<%s> N=%d C=%d rows=%d\n", sizeof(Tw) == 2 ? "bf16" : "fp32", N, C, rows);
    std::vector<float> table = randn((size_t)rows * C), ref((size_t)N * C);
    std::vector<int> ids(N);
    fill_uniform_int(ids, 0, rows);
    embedding_forward_cpu(ref.data(), ids.data(), table.data(), N, C);
    DevBuf<Tw> d_table((size_t)rows * C);
    put(d_table, table);
    DevBuf<int> d_ids(N);
    put(d_ids, ids);
    DevBuf<bf16> d_out((size_t)N * C);
    poison(d_out.p, d_out.n);
    embedding_forward(d_out.p, d_ids.p, d_table.p, N, C, rows, 0);
    expect(check_bf16("out", get(d_out, d_out.n), ref));
    // a bad id gives a NaN row
    ids[N - 1] = rows;
    put(d_ids, ids);
    embedding_forward(d_out.p, d_ids.p, d_table.p, N, C, rows, 0);
    std::vector<float> got = get(d_out, d_out.n);
    bool all_nan = true;
    for (int i = 0; i < C; i++) all_nan = all_nan && std::isnan(got[(size_t)(N - 1) * C + i]);
    printf("  %s %-28s\n", all_nan ? "ok  " : "FAIL", "bad id -> NaN row");
    expect(all_nan);
}

// ids with a skew: a fraction `hot` of the positions take one of 3 hot ids, plus a few bad ids
static std::vector<int> skewed_ids(int N, int rows, double hot, bool with_bad) {
    std::vector<int> ids(N);
    fill_uniform_int(ids, 0, rows);
    std::uniform_real_distribution<double> u(0, 1);
    for (int n = 0; n < N; n++)
        if (u(dev_rng()) < hot) ids[n] = std::min(rows - 1, (int)(u(dev_rng()) * 3));
    if (with_bad && N >= 8) {
        ids[N / 3] = -1;
        ids[N / 2] = rows;
        ids[N - 1] = rows + 7;
    }
    return ids;
}

static void test_embedding_backward(int N, int C, int rows, double hot) {
    printf("embedding_backward N=%d C=%d rows=%d hot=%.2f\n", N, C, rows, hot);
    std::vector<int> ids = skewed_ids(N, rows, hot, true);
    std::vector<float> dout = randn((size_t)N * C), prefill = randn((size_t)rows * C);
    // CPU, in double (a hot row sums ~35000 values: a float reference would be the noisier side),
    // skipping the bad ids as the GPU does
    std::vector<double> refd(prefill.begin(), prefill.end()), doutd(dout.begin(), dout.end());
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0 && ids[n] < rows) embedding_backward_cpu(refd.data(), doutd.data() + (size_t)n * C, ids.data() + n, 1, C);
    std::vector<float> ref(refd.begin(), refd.end());
    DevBuf<int> d_ids(N);
    put(d_ids, ids);
    DevBuf<bf16> d_dout((size_t)N * C);
    put(d_dout, dout);
    DevBuf<float> d_dt((size_t)rows * C);
    put(d_dt, prefill);
    embedding_backward(d_dt.p, d_dout.p, d_ids.p, N, C, rows, g_scratch, 0);
    std::vector<float> got = get(d_dt, d_dt.n);
    expect(validate("dtable", got.data(), ref.data(), ref.size(), 1e-4, 1e-5 * maxabs(ref) + 1e-30));
    put(d_dt, prefill);
    embedding_backward(d_dt.p, d_dout.p, d_ids.p, N, C, rows, g_scratch, 0);
    expect(check_exact("dtable", get(d_dt, d_dt.n), got));
}

template <typename Tw>
static void test_embed_sum(int N, int D, int V, bool accumulate) {
    printf("embed_sum_forward/backward<%s> N=%d D=%d V=%d accumulate=%d\n", sizeof(Tw) == 2 ? "bf16" : "fp32", N, D, V,
           accumulate);
    std::vector<float> tok = randn((size_t)V * D, 0.5f), bg = randn((size_t)N * D), scale = {rbf(0.37f)};
    std::vector<int> ids(N);
    fill_uniform_int(ids, 0, V);
    std::vector<float> ref((size_t)N * D);
    embed_sum_forward_cpu(ref.data(), ids.data(), tok.data(), bg.data(), scale.data(), N, D);
    DevBuf<Tw> d_tok((size_t)V * D);
    put(d_tok, tok);
    DevBuf<int> d_ids(N);
    put(d_ids, ids);
    DevBuf<bf16> d_bg((size_t)N * D), d_out((size_t)N * D);
    put(d_bg, bg);
    DevBuf<float> d_scale(1);
    put(d_scale, scale);
    poison(d_out.p, d_out.n);
    embed_sum_forward(d_out.p, d_ids.p, d_tok.p, d_bg.p, d_scale.p, N, D, V, 0);
    expect(check_bf16("out", get(d_out, d_out.n), ref));
    // backward
    std::vector<float> dout = randn((size_t)N * D), dtok = randn((size_t)V * D), ds = {0.25f};
    std::vector<float> dbg = accumulate ? randn((size_t)N * D) : std::vector<float>((size_t)N * D, 0.f);
    std::vector<float> r_dtok = dtok, r_dbg = dbg, r_ds = ds;
    embed_sum_backward_cpu(r_dtok.data(), r_dbg.data(), r_ds.data(), dout.data(), ids.data(), bg.data(), scale.data(), N, D);
    DevBuf<bf16> d_dout((size_t)N * D), d_dbg((size_t)N * D);
    put(d_dout, dout);
    if (accumulate) put(d_dbg, dbg);
    else poison(d_dbg.p, d_dbg.n);
    DevBuf<float> d_dtok((size_t)V * D), d_ds(1);
    put(d_dtok, dtok);
    put(d_ds, ds);
    embed_sum_backward(d_dtok.p, d_dbg.p, d_ds.p, d_dout.p, d_ids.p, d_bg.p, d_scale.p, N, D, V, accumulate, g_scratch, 0);
    expect(check_bf16("dbg_proj", get(d_dbg, d_dbg.n), r_dbg));
    std::vector<float> g_dtok = get(d_dtok, d_dtok.n);
    expect(validate("dtok_emb", g_dtok.data(), r_dtok.data(), r_dtok.size(), 1e-4, 1e-5 * maxabs(r_dtok) + 1e-30));
    // the scale's gradient is one sum of N*D products
    std::vector<float> g_ds = get(d_ds, 1);
    double l1 = 0;
    for (size_t i = 0; i < dout.size(); i++) l1 += std::fabs((double)dout[i] * bg[i]);
    expect(validate("dbigram_scale", g_ds.data(), r_ds.data(), 1, 1e-3, 1e-6 * l1));
}

// ----------------------------------------------------------------------------
// rmsnorm

static void test_rmsnorm(int N, int C, float scale) {
    printf("rmsnorm N=%d C=%d scale=%g\n", N, C, scale);
    std::vector<float> x = randn((size_t)N * C, 1.3f, 0.2f), out((size_t)N * C), rstd(N);
    rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), N, C, scale);
    DevBuf<bf16> d_x((size_t)N * C), d_out((size_t)N * C);
    DevBuf<float> d_rstd(N);
    put(d_x, x);
    poison(d_out.p, d_out.n);
    poison(d_rstd.p, d_rstd.n);
    rmsnorm_forward(d_out.p, d_rstd.p, d_x.p, N, C, scale, 0);
    expect(check_bf16("out", get(d_out, d_out.n), out));
    std::vector<float> g_rstd = get(d_rstd, N);
    expect(validate("rstd", g_rstd.data(), rstd.data(), N, 1e-5, 0));
    // backward, with the CPU's rstd on both sides
    put(d_rstd, rstd);
    std::vector<float> dout = randn((size_t)N * C);
    DevBuf<bf16> d_dout((size_t)N * C), d_dx((size_t)N * C);
    put(d_dout, dout);
    // and from the output: the GPU reads y = the forward's output as the model keeps it (bf16),
    // the CPU reference the input that y stands for, x' = y / (scale * rstd) (the same gradient in
    // exact math; x' differs from x by y's rounding)
    DevBuf<bf16> d_y((size_t)N * C);
    std::vector<float> y = out, xy((size_t)N * C);
    for (float &v : y) v = rbf(v);
    for (size_t e = 0; e < xy.size(); e++) xy[e] = y[e] / (scale * rstd[e / C]);
    put(d_y, y);
    for (int k = 0; k < 4; k++) {
        const bool acc = k & 1, from_y = k >= 2;
        std::vector<float> dx = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> ref = dx;
        rmsnorm_backward_cpu(ref.data(), dout.data(), from_y ? xy.data() : x.data(), rstd.data(), N, C, scale);
        if (acc) put(d_dx, dx);
        else poison(d_dx.p, d_dx.n);
        if (from_y) rmsnorm_backward_from_out(d_dx.p, d_dout.p, d_y.p, d_rstd.p, N, C, scale, acc, 0);
        else rmsnorm_backward(d_dx.p, d_dout.p, d_x.p, d_rstd.p, N, C, scale, acc, 0);
        static const char *names[4] = {"dinp", "dinp (accumulate)", "dinp from y", "dinp from y (accumulate)"};
        expect(check_bf16(names[k], get(d_dx, d_dx.n), ref));
    }
    // in place: dinp = dout (from the output first: it needs dout intact)
    std::vector<float> ref((size_t)N * C, 0.f);
    rmsnorm_backward_cpu(ref.data(), dout.data(), xy.data(), rstd.data(), N, C, scale);
    put(d_dx, dout);
    rmsnorm_backward_from_out(d_dx.p, d_dx.p, d_y.p, d_rstd.p, N, C, scale, false, 0);
    expect(check_bf16("dinp from y (in place)", get(d_dx, d_dx.n), ref));
    std::fill(ref.begin(), ref.end(), 0.f);
    rmsnorm_backward_cpu(ref.data(), dout.data(), x.data(), rstd.data(), N, C, scale);
    rmsnorm_backward(d_dout.p, d_dout.p, d_x.p, d_rstd.p, N, C, scale, false, 0);
    expect(check_bf16("dinp (in place)", get(d_dout, d_dout.n), ref));
}

// ----------------------------------------------------------------------------
// smear, resid_mix, residual_scale

static void test_smear(int B, int T, int C) {
    printf("smear B=%d T=%d C=%d\n", B, T, C);
    const int N = B * T;
    std::vector<float> x = randn((size_t)N * C), gate = randn(C, 1.5f), out((size_t)N * C);
    smear_forward_cpu(out.data(), x.data(), gate.data(), B, T, C);
    DevBuf<bf16> d_x((size_t)N * C), d_out((size_t)N * C), d_dout((size_t)N * C), d_dx((size_t)N * C);
    DevBuf<float> d_gate(C), d_dgate(C);
    put(d_x, x);
    put(d_gate, gate);
    poison(d_out.p, d_out.n);
    smear_forward(d_out.p, d_x.p, d_gate.p, B, T, C, 0);
    expect(check_bf16("out", get(d_out, d_out.n), out));
    std::vector<float> dout = randn((size_t)N * C);
    put(d_dout, dout);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> dx = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> dgate = randn(C), r_dx = dx, r_dgate = dgate;
        smear_backward_cpu(r_dx.data(), r_dgate.data(), dout.data(), x.data(), gate.data(), B, T, C);
        if (acc) put(d_dx, dx);
        else poison(d_dx.p, d_dx.n);
        put(d_dgate, dgate);
        smear_backward(d_dx.p, d_dgate.p, d_dout.p, d_x.p, d_gate.p, B, T, C, acc, g_scratch, 0);
        expect(check_bf16(acc ? "dinp (accumulate)" : "dinp", get(d_dx, d_dx.n), r_dx));
        std::vector<float> g = get(d_dgate, C);
        expect(check_sum("dgate", g, r_dgate));
        if (!acc) {  // determinism
            put(d_dgate, dgate);
            smear_backward(d_dx.p, d_dgate.p, d_dout.p, d_x.p, d_gate.p, B, T, C, acc, g_scratch, 0);
            expect(check_exact("dgate", get(d_dgate, C), g));
        }
    }
}

static void test_resid_mix(int N, int C) {
    printf("resid_mix N=%d C=%d\n", N, C);
    std::vector<float> x = randn((size_t)N * C), x0 = randn((size_t)N * C), mix = randn(2 * C), out((size_t)N * C);
    resid_mix_forward_cpu(out.data(), x.data(), x0.data(), mix.data(), N, C);
    DevBuf<bf16> d_x((size_t)N * C), d_x0((size_t)N * C), d_out((size_t)N * C), d_dout((size_t)N * C);
    DevBuf<bf16> d_dx((size_t)N * C), d_dx0((size_t)N * C);
    DevBuf<float> d_mix(2 * C), d_dmix(2 * C);
    put(d_x, x);
    put(d_x0, x0);
    put(d_mix, mix);
    poison(d_out.p, d_out.n);
    resid_mix_forward(d_out.p, d_x.p, d_x0.p, d_mix.p, N, C, 0);
    expect(check_bf16("out", get(d_out, d_out.n), out));
    std::vector<float> dout = randn((size_t)N * C);
    put(d_dout, dout);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> dx = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> dx0 = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> dmix = randn(2 * C), r_dx = dx, r_dx0 = dx0, r_dmix = dmix;
        resid_mix_backward_cpu(r_dx.data(), r_dx0.data(), r_dmix.data(), dout.data(), x.data(), x0.data(), mix.data(), N, C);
        if (acc) {
            put(d_dx, dx);
            put(d_dx0, dx0);
        } else {
            poison(d_dx.p, d_dx.n);
            poison(d_dx0.p, d_dx0.n);
        }
        put(d_dmix, dmix);
        resid_mix_backward(d_dx.p, d_dx0.p, d_dmix.p, d_dout.p, d_x.p, d_x0.p, d_mix.p, N, C, acc, acc, g_scratch, 0);
        expect(check_bf16(acc ? "dx (accumulate)" : "dx", get(d_dx, d_dx.n), r_dx));
        expect(check_bf16(acc ? "dx0 (accumulate)" : "dx0", get(d_dx0, d_dx0.n), r_dx0));
        std::vector<float> g = get(d_dmix, 2 * C);
        expect(check_sum("dmix", g, r_dmix));
        if (!acc) {
            put(d_dmix, dmix);
            resid_mix_backward(d_dx.p, d_dx0.p, d_dmix.p, d_dout.p, d_x.p, d_x0.p, d_mix.p, N, C, acc, acc, g_scratch, 0);
            expect(check_exact("dmix", get(d_dmix, 2 * C), g));
        }
    }
}

static void test_residual_scale(int N, int C) {
    printf("residual_scale N=%d C=%d\n", N, C);
    std::vector<float> x = randn((size_t)N * C), y = randn((size_t)N * C), scale = randn(C), out((size_t)N * C);
    residual_scale_forward_cpu(out.data(), x.data(), scale.data(), y.data(), N, C);
    DevBuf<bf16> d_x((size_t)N * C), d_y((size_t)N * C), d_out((size_t)N * C), d_dout((size_t)N * C);
    DevBuf<bf16> d_dx((size_t)N * C), d_dy((size_t)N * C);
    DevBuf<float> d_scale(C), d_ds(C);
    put(d_x, x);
    put(d_y, y);
    put(d_scale, scale);
    poison(d_out.p, d_out.n);
    residual_scale_forward(d_out.p, d_x.p, d_scale.p, d_y.p, N, C, 0);
    expect(check_bf16("out", get(d_out, d_out.n), out));
    residual_scale_forward(d_x.p, d_x.p, d_scale.p, d_y.p, N, C, 0);  // in place
    expect(check_bf16("out (in place)", get(d_x, d_x.n), out));
    std::vector<float> dout = randn((size_t)N * C);
    put(d_dout, dout);
    // modes: 0 = write dx and dy, 1 = accumulate both, 2 = no dx, write dy
    for (int mode = 0; mode < 3; mode++) {
        const bool acc = mode == 1, with_dx = mode != 2;
        std::vector<float> dx = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> dy = acc ? randn((size_t)N * C) : std::vector<float>((size_t)N * C, 0.f);
        std::vector<float> ds = randn(C), r_dx = dx, r_dy = dy, r_ds = ds;
        residual_scale_backward_cpu(with_dx ? r_dx.data() : nullptr, r_ds.data(), r_dy.data(), dout.data(), scale.data(),
                                    y.data(), N, C);
        if (acc) {
            put(d_dx, dx);
            put(d_dy, dy);
        } else {
            poison(d_dx.p, d_dx.n);
            poison(d_dy.p, d_dy.n);
        }
        put(d_ds, ds);
        residual_scale_backward(with_dx ? d_dx.p : nullptr, d_ds.p, d_dy.p, d_dout.p, d_scale.p, d_y.p, N, C, acc, acc,
                                g_scratch, 0);
        if (with_dx) expect(check_bf16(acc ? "dx (accumulate)" : "dx", get(d_dx, d_dx.n), r_dx));
        expect(check_bf16(acc ? "dy (accumulate)" : "dy", get(d_dy, d_dy.n), r_dy));
        std::vector<float> g = get(d_ds, C);
        expect(check_sum("dscale", g, r_ds));
        if (mode == 2) {
            put(d_ds, ds);
            residual_scale_backward(nullptr, d_ds.p, d_dy.p, d_dout.p, d_scale.p, d_y.p, N, C, false, false, g_scratch, 0);
            expect(check_exact("dscale", get(d_ds, C), g));
        }
    }
}

// the residual scale folded into the proj weight (fold_scale_transpose / fold_scale_grad): the
// scaled transposed weight against its twin, and the gradients against the UNFOLDED math in
// double (residual_scale_backward_cpu's dy and dscale, then the proj's weight gradient
// dy^T a): the identity the fold rests on. G = dout^T a is computed here (on the GPU it is a
// cuBLASLt GEMM, checked by dev_matmul). Gradients pre-filled (they accumulate).
static void test_fold_scale(int N, int C, int K) {
    printf("fold_scale N=%d C=%d K=%d\n", N, C, K);
    std::vector<float> w = randn((size_t)C * K, 0.05f), scale = randn(C, 0.3f, 1.f), dout = randn((size_t)N * C),
                       a = randn((size_t)N * K);
    std::vector<float> wt((size_t)K * C);
    fold_scale_transpose_cpu(wt.data(), w.data(), scale.data(), C, K);
    DevBuf<bf16> d_w((size_t)C * K), d_wt((size_t)K * C);
    DevBuf<float> d_scale(C), d_g((size_t)C * K), d_dw((size_t)C * K), d_ds(C);
    put(d_w, w);
    put(d_scale, scale);
    poison(d_wt.p, d_wt.n);
    fold_scale_transpose(d_wt.p, d_w.p, d_scale.p, C, K, 0);
    expect(check_bf16("wt", get(d_wt, d_wt.n), wt));
    // the unfolded reference in double: dy = scale * dout, dW = dy^T a, dscale = sum dout * (a W^T)
    std::vector<double> dd(dout.begin(), dout.end()), ad(a.begin(), a.end()), wd(w.begin(), w.end()),
        sd(scale.begin(), scale.end()), y((size_t)N * C), dy((size_t)N * C, 0.0), ds(C, 0.0), dwd((size_t)C * K, 0.0),
        g((size_t)C * K, 0.0);
    matmul_forward_cpu(y.data(), ad.data(), wd.data(), N, K, C);  // y = a W^T
    residual_scale_backward_cpu<double>(nullptr, ds.data(), dy.data(), dd.data(), sd.data(), y.data(), N, C);
#pragma omp parallel for
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                dwd[(size_t)c * K + k] += dy[(size_t)n * C + c] * ad[(size_t)n * K + k];
                g[(size_t)c * K + k] += dd[(size_t)n * C + c] * ad[(size_t)n * K + k];
            }
    std::vector<float> dw0 = randn((size_t)C * K), ds0 = randn(C), gf(g.begin(), g.end()), r_dw = dw0, r_ds = ds0;
    for (size_t i = 0; i < r_dw.size(); i++) r_dw[i] = (float)(dw0[i] + dwd[i]);
    for (int c = 0; c < C; c++) r_ds[c] = (float)(ds0[c] + ds[c]);
    put(d_g, gf);
    put(d_dw, dw0);
    put(d_ds, ds0);
    fold_scale_grad(d_dw.p, d_ds.p, d_g.p, d_scale.p, d_w.p, C, K, 0);
    expect(check_sum("dw (accumulate)", get(d_dw, d_dw.n), r_dw));
    const std::vector<float> got = get(d_ds, C);
    expect(check_sum("dscale (accumulate)", got, r_ds));
    put(d_ds, ds0);
    fold_scale_grad(d_dw.p, d_ds.p, d_g.p, d_scale.p, d_w.p, C, K, 0);
    expect(check_exact("dscale", get(d_ds, C), got));
}

// the fused residual + rmsnorm forwards: the residual against its CPU twin, then ln and rstd
// against rmsnorm_forward_cpu of the residual the GPU stored (the norm must be that of the
// stored bf16 values, which the backward reads; a CPU-rounded residual could differ in a last
// bf16 bit where the GPU's fma and the CPU's multiply-add round differently)
static void test_residual_rmsnorm(int N, int C, float scale) {
    printf("resid_mix_rmsnorm / residual_scale_rmsnorm N=%d C=%d scale=%g\n", N, C, scale);
    std::vector<float> x = randn((size_t)N * C), x0 = randn((size_t)N * C), mix = randn(2 * C), rs = randn(C);
    DevBuf<bf16> d_x((size_t)N * C), d_x0((size_t)N * C), d_res((size_t)N * C), d_ln((size_t)N * C);
    DevBuf<float> d_mix(2 * C), d_rs(C), d_rstd(N);
    put(d_x, x);
    put(d_x0, x0);
    put(d_mix, mix);
    put(d_rs, rs);
    for (int mode = 1; mode <= 2; mode++) {
        std::vector<float> res((size_t)N * C), ln((size_t)N * C), rstd(N);
        if (mode == 1) resid_mix_forward_cpu(res.data(), x.data(), x0.data(), mix.data(), N, C);
        else residual_scale_forward_cpu(res.data(), x.data(), rs.data(), x0.data(), N, C);
        poison(d_res.p, d_res.n);
        poison(d_ln.p, d_ln.n);
        poison(d_rstd.p, N);
        if (mode == 1) resid_mix_rmsnorm_forward(d_res.p, d_ln.p, d_rstd.p, d_x.p, d_x0.p, d_mix.p, N, C, scale, 0);
        else residual_scale_rmsnorm_forward(d_res.p, d_ln.p, d_rstd.p, d_x.p, d_rs.p, d_x0.p, N, C, scale, 0);
        std::vector<float> g_res = get(d_res, d_res.n);
        expect(check_bf16(mode == 1 ? "x_in" : "out", g_res, res));
        rmsnorm_forward_cpu(ln.data(), rstd.data(), g_res.data(), N, C, scale);
        expect(check_bf16("ln", get(d_ln, d_ln.n), ln));
        std::vector<float> g = get(d_rstd, N);
        expect(validate("rstd", g.data(), rstd.data(), N, 1e-5, 0));
    }
}

// a and b bit for bit (the bits of each value, so -0 is not +0; NaN fails): `name` against
// `whose` values. Prints one line; returns true when they are the same.
static bool check_same_bits(const char *name, const std::vector<float> &a, const std::vector<float> &b, const char *whose) {
    size_t bad = a.size() == b.size() ? 0 : std::max(a.size(), b.size());
    for (size_t e = 0; e < std::min(a.size(), b.size()); e++)
        bad += std::isnan(a[e]) || memcmp(&a[e], &b[e], sizeof(float)) != 0;
    printf("  %s %-28s %zu/%zu differ from %s (bitwise)\n", bad ? "FAIL" : "ok  ", name, bad, a.size(), whose);
    return bad == 0;
}

// the backward of x_in = resid_mix(resid, x0), ln = scale * rmsnorm(x_in), fused; against the
// CPU's rmsnorm_backward then resid_mix_backward, with d x_in rounded to bf16 in between as the
// unfused launchers store it, and the input x' = ln / (scale * rstd) that the kept ln stands for.
// ln and rstd come from the GPU forward (resid_mix_rmsnorm_forward), as in the model: version 2
// rebuilds ln from resid and x0 instead of reading it, so both versions see the same ln only when
// it is the forward's. Both versions run (each against the CPU, each twice: the same bits), then
// version 2's outputs must equal version 1's bit for bit (dmix too where both run the same grid).
static void test_rmsnorm_resid_mix(int N, int C, float scale) {
    printf("rmsnorm_resid_mix_backward N=%d C=%d scale=%g\n", N, C, scale);
    const size_t n = (size_t)N * C;
    std::vector<float> resid = randn(n), x0 = randn(n), mix = randn(2 * C, 0.5f, 0.5f), xy(n);
    std::vector<float> dln = randn(n), dres_in = randn(n), dx0_in = randn(n), dmix_in = randn(2 * C);
    DevBuf<bf16> d_resid(n), d_x0(n), d_xin(n), d_ln(n), d_dln(n), d_dres(n), d_dx0(n);
    DevBuf<float> d_mix(2 * C), d_rstd(N), d_dmix(2 * C);
    put(d_resid, resid);
    put(d_x0, x0);
    put(d_dln, dln);
    put(d_mix, mix);
    resid_mix_rmsnorm_forward(d_xin.p, d_ln.p, d_rstd.p, d_resid.p, d_x0.p, d_mix.p, N, C, scale, 0);
    const std::vector<float> ln = get(d_ln, n), rstd = get(d_rstd, N);
    for (size_t e = 0; e < n; e++) xy[e] = ln[e] / (scale * rstd[e / C]);
    const bool same_grid = rmsnorm_resid_mix_blocks(N, C, false, 1) == rmsnorm_resid_mix_blocks(N, C, false, 2);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> dxin = dres_in, r_dres(n, 0.f), r_dx0 = acc ? dx0_in : std::vector<float>(n, 0.f), r_dmix = dmix_in;
        rmsnorm_backward_cpu(dxin.data(), dln.data(), xy.data(), rstd.data(), N, C, scale);
        for (float &v : dxin) v = rbf(v);
        resid_mix_backward_cpu(r_dres.data(), r_dx0.data(), r_dmix.data(), dxin.data(), resid.data(), x0.data(), mix.data(), N, C);
        std::vector<float> out[3][3];  // [version][dres, dx0, dmix]
        for (int version = 1; version <= 2; version++) {
            char name[64];
            std::vector<float> g_dmix;
            for (int run = 0; run < 2; run++) {  // the second run: the same bits
                put(d_dres, dres_in);
                if (acc) put(d_dx0, dx0_in);
                else poison(d_dx0.p, n);
                put(d_dmix, dmix_in);
                if (version == 2) poison(d_ln.p, n);  // not read
                rmsnorm_resid_mix_backward(d_dres.p, d_dx0.p, d_dmix.p, d_dln.p, d_ln.p, d_rstd.p, d_resid.p, d_x0.p, d_mix.p, N,
                                           C, scale, acc, g_scratch, 0, ResidMixSkip(), version);
                if (run == 1) {
                    snprintf(name, sizeof name, "dmix v%d", version);
                    expect(check_exact(name, get(d_dmix, 2 * C), g_dmix));
                    break;
                }
                out[version][0] = get(d_dres, n);
                out[version][1] = get(d_dx0, n);
                snprintf(name, sizeof name, "dresid v%d", version);
                expect(check_bf16(name, out[version][0], r_dres));
                // dx0 = dx0_in + mix1 * g, g = dx_in rounded to bf16 on both sides: where the GPU's and
                // the CPU's fp32 sums put g on either side of a rounding boundary, the two g differ by
                // one bf16 ulp, and with dx0_in cancelling that is more than 1e-2 of the output (seen:
                // 1 of 10.2M elements, 0.0312 on 0.896). The bound adds that ulp, |mix1| ulp(g).
                std::vector<float> flip(n);
                for (size_t e = 0; e < n; e++) flip[e] = std::fabs(rbf(mix[C + e % C])) * bf16_ulp(dxin[e]);
                snprintf(name, sizeof name, acc ? "dx0 (accumulate) v%d" : "dx0 v%d", version);
                expect(check_bf16_plus(name, out[version][1], r_dx0, flip));
                g_dmix = get(d_dmix, 2 * C);
                out[version][2] = g_dmix;
                snprintf(name, sizeof name, "dmix v%d", version);
                expect(check_sum(name, g_dmix, r_dmix));
            }
            if (version == 2) put(d_ln, ln);
        }
        expect(check_same_bits(acc ? "v2 = v1 dresid (accumulate)" : "v2 = v1 dresid", out[2][0], out[1][0], "v1's"));
        expect(check_same_bits(acc ? "v2 = v1 dx0 (accumulate)" : "v2 = v1 dx0", out[2][1], out[1][1], "v1's"));
        if (same_grid) expect(check_same_bits("v2 = v1 dmix", out[2][2], out[1][2], "v1's"));
        else expect(check_sum("v2 dmix (another grid)", out[2][2], out[1][2]));
    }
}

// block_start_forward (a block's output, the next block's skip, mix and rmsnorm in one pass)
// against the launchers it replaces (residual_scale_forward, the skip's residual_scale_forward,
// resid_mix_rmsnorm_forward), bit for bit: out, x_in, ln, rstd; x_in in place over a, as the
// model runs it. (Those launchers are checked against the CPU twins above.)
// enc_is_out: the skip reads the out being written (the first decoder block's case)
static void test_block_start(int N, int C, bool skip, bool enc_is_out = false) {
    printf("block_start_forward skip=%d enc=out:%d N=%d C=%d\n", (int)skip, (int)enc_is_out, N, C);
    const size_t n = (size_t)N * C;
    const float scale = 0.7f;
    std::vector<float> a = randn(n), b = randn(n), enc = randn(n), x0 = randn(n), rs = randn(C, 0.3f, 0.5f),
                       w = randn(C, 0.3f, 0.7f), mix = randn(2 * C, 0.5f, 0.5f);
    DevBuf<bf16> d_a(n), d_b(n), d_enc(n), d_x0(n), u_out(n), u_r(n), u_xin(n), u_ln(n), f_out(n), f_xin(n), f_ln(n);
    DevBuf<float> d_rs(C), d_w(C), d_mix(2 * C), u_rstd(N), f_rstd(N);
    put(d_a, a), put(d_b, b), put(d_enc, enc), put(d_x0, x0), put(d_rs, rs), put(d_w, w), put(d_mix, mix);
    residual_scale_forward(u_out.p, d_a.p, d_rs.p, d_b.p, N, C, 0);
    const bf16 *r = u_out.p;
    if (skip) {
        residual_scale_forward(u_r.p, u_out.p, d_w.p, enc_is_out ? u_out.p : d_enc.p, N, C, 0);
        r = u_r.p;
    }
    resid_mix_rmsnorm_forward(u_xin.p, u_ln.p, u_rstd.p, r, d_x0.p, d_mix.p, N, C, scale, 0);
    put(f_xin, a);  // a, overwritten in place by x_in
    poison(f_out.p, n), poison(f_ln.p, n), poison(f_rstd.p, N);
    block_start_forward(f_out.p, f_xin.p, f_ln.p, f_rstd.p, f_xin.p, d_rs.p, d_b.p,
                        skip ? (enc_is_out ? f_out.p : d_enc.p) : nullptr, d_w.p, d_x0.p, d_mix.p, N, C, scale, 0);
    auto same = [&](const char *name, const std::vector<float> &x, const std::vector<float> &y) {
        size_t bad = 0;
        for (size_t e = 0; e < x.size(); e++) bad += !(x[e] == y[e]);  // NaN never equal
        printf("  %s %-28s %zu/%zu differ from the unfused launchers' (bitwise)\n", bad ? "FAIL" : "ok  ", name, bad, x.size());
        expect(bad == 0);
    };
    same("block start out", get(f_out, n), get(u_out, n));
    same("block start x_in", get(f_xin, n), get(u_xin, n));
    same("block start ln", get(f_ln, n), get(u_ln, n));
    same("block start rstd", get(f_rstd, N), get(u_rstd, N));
}

// rmsnorm_resid_mix_backward's skip parts (ResidMixSkip): the fused call against the unfused
// launchers it replaces, on the GPU, bit for bit (dres, dx0, denc), and its parameter sums against
// theirs (another order). add_mode 0: no add, 1: a separate add tensor, 2: add = this call's denc
// (the first decoder block). Without a skip (enc null) only the add runs. enc_is_prev: the skip
// reads the block's input itself (the first decoder block's case in the model). ln and rstd come
// from the GPU forward of the resid (prev + w * enc with the skip), as in the model; both versions
// run, and version 2's outputs (dres, dx0, denc, dmix, dskip_w) must equal version 1's bit for bit.
static void test_rmsnorm_resid_mix_skip(int N, int C, bool skip, int add_mode, bool enc_is_prev = false) {
    printf("rmsnorm_resid_mix_backward skip=%d add=%d%s N=%d C=%d\n", (int)skip, add_mode, enc_is_prev ? " enc=prev" : "", N, C);
    const size_t n = (size_t)N * C;
    const float scale = 0.5f;
    std::vector<float> prev = randn(n), enc = randn(n), x0 = randn(n), dln = randn(n), dres_in = randn(n), dx0_in = randn(n),
                       add = randn(n), mix = randn(2 * C, 0.5f, 0.5f), w = randn(C, 0.3f, 0.7f), dmix0 = randn(2 * C),
                       dw0 = randn(C);
    DevBuf<bf16> d_prev(n), d_enc(n), d_x0(n), d_xin(n), d_ln(n), d_dln(n), d_add(n), d_resid(n);
    DevBuf<bf16> d_dres(n), d_dx0(n), d_denc(n), u_dres(n), u_dx0(n), u_denc(n);
    DevBuf<float> d_mix(2 * C), d_w(C), d_rstd(N), d_dmix(2 * C), d_dw(C), u_dmix(2 * C), u_dw(C);
    put(d_prev, prev), put(d_enc, enc), put(d_x0, x0), put(d_dln, dln), put(d_add, add);
    put(d_mix, mix), put(d_w, w);
    const bf16 *e_in = enc_is_prev ? d_prev.p : d_enc.p;  // the skip's input
    const bf16 *resid = d_prev.p;
    if (skip) {
        residual_scale_forward(d_resid.p, d_prev.p, d_w.p, e_in, N, C, 0);
        resid = d_resid.p;
    }
    resid_mix_rmsnorm_forward(d_xin.p, d_ln.p, d_rstd.p, resid, d_x0.p, d_mix.p, N, C, scale, 0);
    std::vector<float> fused[3][5];  // [version][dres, dx0, denc, dmix, dskip_w]
    for (int version = 1; version <= 2; version++) {
        // the unfused launchers
        put(u_dres, dres_in), put(u_dx0, dx0_in), put(u_dmix, dmix0), put(u_dw, dw0);
        poison(u_denc.p, n);
        rmsnorm_resid_mix_backward(u_dres.p, u_dx0.p, u_dmix.p, d_dln.p, d_ln.p, d_rstd.p, resid, d_x0.p, d_mix.p, N, C, scale,
                                   true, g_scratch, 0, ResidMixSkip(), version);
        if (skip) residual_scale_backward(nullptr, u_dw.p, u_denc.p, u_dres.p, d_w.p, e_in, N, C, false, false, g_scratch, 0);
        if (add_mode == 1) add_inplace(u_dres.p, d_add.p, n, 0);
        if (add_mode == 2) add_inplace(u_dres.p, u_denc.p, n, 0);
        // the fused call
        put(d_dres, dres_in), put(d_dx0, dx0_in), put(d_dmix, dmix0), put(d_dw, dw0);
        poison(d_denc.p, n);
        ResidMixSkip sk;
        if (skip) sk.enc = e_in, sk.skip_w = d_w.p, sk.denc = d_denc.p, sk.dskip_w = d_dw.p;
        if (add_mode == 1) sk.add = d_add.p;
        if (add_mode == 2) sk.add = d_denc.p;
        rmsnorm_resid_mix_backward(d_dres.p, d_dx0.p, d_dmix.p, d_dln.p, d_ln.p, d_rstd.p, d_prev.p, d_x0.p, d_mix.p, N, C, scale,
                                   true, g_scratch, 0, sk, version);
        auto same = [&](const char *what, const DevBuf<bf16> &a, const DevBuf<bf16> &b) {
            const std::vector<float> x = get(a, n), y = get(b, n);
            size_t bad = 0;
            for (size_t e = 0; e < n; e++) bad += !(x[e] == y[e]);  // NaN never equal
            char name[64];
            snprintf(name, sizeof name, "%s v%d", what, version);
            printf("  %s %-28s %zu/%zu differ from the unfused launchers' (bitwise)\n", bad ? "FAIL" : "ok  ", name, bad, n);
            expect(bad == 0);
        };
        same("skip dres", d_dres, u_dres);
        same("skip dx0", d_dx0, u_dx0);
        if (skip) same("skip denc", d_denc, u_denc);
        char name[64];
        fused[version][3] = get(d_dmix, 2 * C);
        snprintf(name, sizeof name, "skip dmix v%d", version);
        expect(check_sum(name, fused[version][3], get(u_dmix, 2 * C)));
        if (skip) {
            fused[version][4] = get(d_dw, C);
            snprintf(name, sizeof name, "skip dskip_w v%d", version);
            expect(check_sum(name, fused[version][4], get(u_dw, C)));
        }
        fused[version][0] = get(d_dres, n);
        fused[version][1] = get(d_dx0, n);
        if (skip) fused[version][2] = get(d_denc, n);
        if (version == 1) poison(d_ln.p, n);  // version 2 does not read it
    }
    expect(check_same_bits("v2 = v1 skip dres", fused[2][0], fused[1][0], "v1's"));
    expect(check_same_bits("v2 = v1 skip dx0", fused[2][1], fused[1][1], "v1's"));
    if (skip) expect(check_same_bits("v2 = v1 skip denc", fused[2][2], fused[1][2], "v1's"));
    const bool same_grid = rmsnorm_resid_mix_blocks(N, C, skip, 1) == rmsnorm_resid_mix_blocks(N, C, skip, 2);
    if (same_grid) {
        expect(check_same_bits("v2 = v1 skip dmix", fused[2][3], fused[1][3], "v1's"));
        if (skip) expect(check_same_bits("v2 = v1 skip dskip_w", fused[2][4], fused[1][4], "v1's"));
    } else {
        expect(check_sum("v2 skip dmix (another grid)", fused[2][3], fused[1][3]));
        if (skip) expect(check_sum("v2 skip dskip_w (another grid)", fused[2][4], fused[1][4]));
    }
}

// ----------------------------------------------------------------------------
// relu^2, scalar scale

static void test_relu2(size_t n) {
    printf("relu2 n=%zu\n", n);
    std::vector<float> x = randn(n), out(n);
    relu2_forward_cpu(out.data(), x.data(), n);
    DevBuf<bf16> d_x(n), d_out(n), d_dout(n), d_dx(n);
    put(d_x, x);
    poison(d_out.p, n);
    relu2_forward(d_out.p, d_x.p, n, 0);
    expect(check_bf16("out", get(d_out, n), out));
    std::vector<float> dout = randn(n);
    put(d_dout, dout);
    // the input that the GPU's relu^2 (bf16) stands for: sqrt of it (0 where x <= 0)
    std::vector<float> g_out = get(d_out, n), xr(n);
    for (size_t e = 0; e < n; e++) xr[e] = std::sqrt(g_out[e]);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> dx = acc ? randn(n) : std::vector<float>(n, 0.f), ref = dx, ref_r = dx;
        relu2_backward_cpu(ref.data(), dout.data(), x.data(), n);
        relu2_backward_cpu(ref_r.data(), dout.data(), xr.data(), n);
        if (acc) put(d_dx, dx);
        else poison(d_dx.p, n);
        relu2_backward(d_dx.p, d_dout.p, d_x.p, n, acc, 0);
        expect(check_bf16(acc ? "dinp (accumulate)" : "dinp", get(d_dx, n), ref));
        // from the output: the GPU reads its own relu^2 (bf16), the CPU reference sqrt of it
        if (acc) put(d_dx, dx);
        else poison(d_dx.p, n);
        relu2_backward_from_out(d_dx.p, d_dout.p, d_out.p, n, acc, 0);
        expect(check_bf16(acc ? "dinp from relu^2 (accumulate)" : "dinp from relu^2", get(d_dx, n), ref_r));
    }
    // from the output in place (dinp = dout), as the model runs it
    std::vector<float> ref(n, 0.f);
    relu2_backward_cpu(ref.data(), dout.data(), xr.data(), n);
    relu2_backward_from_out(d_dout.p, d_dout.p, d_out.p, n, false, 0);
    expect(check_bf16("dinp from relu^2 (in place)", get(d_dout, n), ref));
}

static void test_scalar_scale(size_t n) {
    printf("scalar_scale n=%zu\n", n);
    std::vector<float> x = randn(n), s = {rbf(-0.71f)};
    DevBuf<bf16> d_x(n), d_out(n), d_dout(n), d_dx(n);
    DevBuf<float> d_s(1), d_ds(1);
    put(d_x, x);
    put(d_s, s);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> out = acc ? randn(n) : std::vector<float>(n, 0.f), ref = out;
        scalar_scale_forward_cpu(ref.data(), x.data(), s.data(), n, acc != 0);
        if (acc) put(d_out, out);
        else poison(d_out.p, n);
        scalar_scale_forward(d_out.p, d_x.p, d_s.p, n, acc, 0);
        expect(check_bf16(acc ? "out (accumulate)" : "out", get(d_out, n), ref));
    }
    std::vector<float> dout = randn(n);
    put(d_dout, dout);
    double l1 = 0;
    for (size_t i = 0; i < n; i++) l1 += std::fabs((double)dout[i] * x[i]);
    for (int acc = 0; acc < 2; acc++) {
        std::vector<float> dx = acc ? randn(n) : std::vector<float>(n, 0.f), ds = {1.5f}, r_dx = dx, r_ds = ds;
        scalar_scale_backward_cpu(r_dx.data(), r_ds.data(), dout.data(), x.data(), s.data(), n);
        if (acc) put(d_dx, dx);
        else poison(d_dx.p, n);
        put(d_ds, ds);
        scalar_scale_backward(d_dx.p, d_ds.p, d_dout.p, d_x.p, d_s.p, n, acc, g_scratch, 0);
        expect(check_bf16(acc ? "dinp (accumulate)" : "dinp", get(d_dx, n), r_dx));
        std::vector<float> g = get(d_ds, 1);
        expect(validate("ds", g.data(), r_ds.data(), 1, 1e-3, 1e-6 * l1));
    }
}

// ----------------------------------------------------------------------------
// q/k norm + RoPE + gain

// What one version of the q/k launchers wrote on one shape (dev_layers compares the versions).
// dgain, dgain_out: dgain from xn / from out (not accumulating into dinp), with the backward's
// per-block partials (part, part_out: the scratch's first REDUCE_MAX_BLOCKS * NH floats,
// poisoned before the call)
struct QkResults {
    std::vector<float> out, xn, rstd, re, dx, dx_acc, dx_inplace, dx_out, dx_out_acc, dgain, dgain_out, part, part_out;
};
// the gain partials the q/k backward left in the scratch (qk_partials_poison before it)
static void qk_partials_poison(int NH) { poison((float *)g_scratch.ptr, (size_t)REDUCE_MAX_BLOCKS * NH); }
static std::vector<float> qk_partials(int NH) {
    std::vector<float> h((size_t)REDUCE_MAX_BLOCKS * NH);
    cudaCheck(cudaMemcpy(h.data(), g_scratch.ptr, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
static bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The q/k checks of one version of the launchers (2: head-row kernels, 3: token-row kernels;
// each launcher falls back to 2 where 3 does not fit the shape) and, for 3, one form of the
// token-row backward (form: 1 qk_backward_v3_kernel, 2 qk_backward_v3f_kernel). Inputs are drawn
// from a fixed seed, so every version and form sees the same ones.
static QkResults check_qk_version(int version, int form, int B, int T, int NH, int hd, int rd, bool with_gain) {
    std::mt19937_64 saved = dev_rng();
    dev_rng().seed(4242 + B * 7 + T * 13 + NH * 17 + hd * 19 + rd * 23);
    const int N = B * T, half = rd / 2;
    const size_t n = (size_t)N * NH * hd;
    QkResults res;
    std::vector<float> cs((size_t)T * half), sn((size_t)T * half);
    rope_tables_cpu(cs.data(), sn.data(), T, rd, 10000.0);
    DevBuf<float> d_cos((size_t)T * half), d_sin((size_t)T * half);
    rope_tables(d_cos.p, d_sin.p, T, rd, 10000.0);
    expect(validate("rope cos", get(d_cos, cs.size()).data(), cs.data(), cs.size(), 0, 0));
    expect(validate("rope sin", get(d_sin, sn.size()).data(), sn.data(), sn.size(), 0, 0));
    std::vector<float> x = randn(n, 0.8f, 0.1f), gain = randn(NH, 0.7f, 1.5f);
    std::vector<float> out(n), xn(n), rstd((size_t)N * NH);
    qk_norm_rope_gain_forward_cpu(out.data(), xn.data(), rstd.data(), x.data(), cs.data(), sn.data(),
                                  with_gain ? gain.data() : nullptr, B, T, NH, hd, rd);
    DevBuf<bf16> d_x(n), d_out(n), d_xn(n), d_dout(n), d_dx(n);
    DevBuf<float> d_rstd((size_t)N * NH), d_gain(NH), d_dgain(NH);
    put(d_x, x);
    put(d_gain, gain);
    poison(d_out.p, n);
    poison(d_xn.p, n);
    poison(d_rstd.p, d_rstd.n);
    qk_norm_rope_gain_forward(d_out.p, d_xn.p, d_rstd.p, d_x.p, d_cos.p, d_sin.p, with_gain ? d_gain.p : nullptr, B, T,
                              NH, hd, rd, 0, version);
    res.out = get(d_out, n), res.xn = get(d_xn, n);
    expect(check_bf16("xn", res.xn, xn));
    // out: the GPU rotates xn as stored (bf16), as the reference does (its rms_norm returns bf16
    // under autocast before RoPE). So the reference for out is the CPU RoPE of that same xn (just
    // checked against the twin): rotating the unrounded xn instead differs by a bf16 ulp of xn,
    // which is several % of an out element where x1 cos and x2 sin nearly cancel.
    std::vector<float> r_out(n);
    qk_rope_gain_forward_cpu(r_out.data(), res.xn.data(), cs.data(), sn.data(), with_gain ? gain.data() : nullptr, B, T, NH,
                             hd, rd);
    expect(check_bf16("out", res.out, r_out));
    res.rstd = get(d_rstd, d_rstd.n);
    expect(validate("rstd", res.rstd.data(), rstd.data(), rstd.size(), 1e-5, 0));
    // out again from the GPU's xn (the model's backward does this): against the same reference,
    // and bit for bit the forward's out (what attention_forward read)
    {
        DevBuf<bf16> d_re(n);
        poison(d_re.p, n);
        qk_rope_gain_forward(d_re.p, d_xn.p, d_cos.p, d_sin.p, with_gain ? d_gain.p : nullptr, B, T, NH, hd, rd, 0, version);
        res.re = get(d_re, n);
        expect(check_bf16("out from xn", res.re, r_out));
        const bool same = memcmp(res.re.data(), res.out.data(), n * sizeof(float)) == 0;
        printf("  %s %-28s bitwise identical to the forward's out\n", same ? "ok  " : "FAIL", "out from xn");
        expect(same);
    }
    // backward on independent random inputs (any xn, rstd will do for the formula). from_out: the
    // same buffer given as the forward's out, xn = RoPE^T(out) / gain (the model's form), against
    // the CPU twin on the xn the twin recomputes from it (qk_xn_from_out_cpu)
    std::vector<float> b_xn = randn(n), b_rstd((size_t)N * NH), dout = randn(n), b_xn_of_out(n);
    std::uniform_real_distribution<float> u(0.5f, 2.f);
    for (float &r : b_rstd) r = u(dev_rng());
    put(d_xn, b_xn);
    put(d_rstd, b_rstd);
    put(d_dout, dout);
    qk_xn_from_out_cpu(b_xn_of_out.data(), b_xn.data(), cs.data(), sn.data(), with_gain ? gain.data() : nullptr, B, T, NH, hd,
                       rd);
    for (int from_out = 0; from_out < 2; from_out++) {
        const bf16 *g_xn = from_out ? nullptr : d_xn.p, *g_out = from_out ? d_xn.p : nullptr;
        const std::vector<float> &c_xn = from_out ? b_xn_of_out : b_xn;
        for (int acc = 0; acc < 2; acc++) {
            const std::string what = std::string(acc ? "dinp (accumulate)" : "dinp") + (from_out ? " from out" : "");
            std::vector<float> dx = acc ? randn(n) : std::vector<float>(n, 0.f), dgain = randn(NH), r_dx = dx, r_dgain = dgain;
            qk_norm_rope_gain_backward_cpu(r_dx.data(), with_gain ? r_dgain.data() : nullptr, dout.data(), c_xn.data(),
                                           b_rstd.data(), cs.data(), sn.data(), with_gain ? gain.data() : nullptr, B, T, NH,
                                           hd, rd);
            if (acc) put(d_dx, dx);
            else poison(d_dx.p, n);
            put(d_dgain, dgain);
            qk_partials_poison(NH);
            qk_norm_rope_gain_backward(d_dx.p, with_gain ? d_dgain.p : nullptr, d_dout.p, g_xn, g_out, d_rstd.p, d_cos.p,
                                       d_sin.p, with_gain ? d_gain.p : nullptr, B, T, NH, hd, rd, acc, g_scratch, 0, version,
                                       form);
            std::vector<float> &got = from_out ? (acc ? res.dx_out_acc : res.dx_out) : (acc ? res.dx_acc : res.dx);
            got = get(d_dx, n);
            expect(check_bf16(what.c_str(), got, r_dx));
            if (with_gain) {
                std::vector<float> g = get(d_dgain, NH);
                expect(check_sum(from_out ? "dgain from out" : "dgain", g, r_dgain));
                if (!acc) {
                    (from_out ? res.dgain_out : res.dgain) = g;
                    (from_out ? res.part_out : res.part) = qk_partials(NH);
                    put(d_dgain, dgain);
                    qk_norm_rope_gain_backward(d_dx.p, d_dgain.p, d_dout.p, g_xn, g_out, d_rstd.p, d_cos.p, d_sin.p, d_gain.p, B,
                                               T, NH, hd, rd, acc, g_scratch, 0, version, form);
                    expect(check_exact(from_out ? "dgain from out" : "dgain", get(d_dgain, NH), g));
                }
            }
        }
    }
    // in place (dinp = dout), no accumulation
    std::vector<float> ref(n, 0.f);
    qk_norm_rope_gain_backward_cpu(ref.data(), (float *)nullptr, dout.data(), b_xn.data(), b_rstd.data(), cs.data(),
                                   sn.data(), with_gain ? gain.data() : nullptr, B, T, NH, hd, rd);
    qk_norm_rope_gain_backward(d_dout.p, nullptr, d_dout.p, d_xn.p, nullptr, d_rstd.p, d_cos.p, d_sin.p,
                               with_gain ? d_gain.p : nullptr, B, T, NH, hd, rd, false, g_scratch, 0, version, form);
    res.dx_inplace = get(d_dout, n);
    expect(check_bf16("dinp (in place)", res.dx_inplace, ref));
    dev_rng() = saved;
    return res;
}

// The q/k backward from attention's fp32 dQ accumulator (qk_norm_rope_gain_backward_from_acc),
// where it takes the shape, in both forms of the token-row backward: bit for bit what attention's
// dq pass (attention_backward_dq_convert, the shipping one) followed by qk_norm_rope_gain_backward
// (version 3, form 1) gives, dinp, dgain and the per-block gain partials, overwriting and
// accumulating; and against the CPU twin on the rounded dout bf16(acc * scale). The bf16
// backward's form 2 on that dq, bit for bit the same too. The accumulator holds unrounded fp32
// values (as attention's does), so the rounding matters: with the scale left out or the rounding
// skipped, the bitwise lines fail.
static void test_qk_from_acc(int B, int T, int NH, int hd, int rd, bool with_gain) {
    DevBuf<float> probe(8);
    if (!qk_backward_from_acc_fits(NH, hd, rd, probe.p, probe.p, 3)) return;
    printf("qk backward from fp32 dQ B=%d T=%d NH=%d hd=%d rd=%d gain=%d\n", B, T, NH, hd, rd, with_gain);
    std::mt19937_64 saved = dev_rng();
    dev_rng().seed(777 + B * 7 + T * 13 + NH * 17 + hd * 19 + rd * 23);
    const int N = B * T, half = rd / 2;
    const size_t n = (size_t)N * NH * hd;
    const float scale = attention_backward_dq_acc_scale();
    std::vector<float> cs((size_t)T * half), sn((size_t)T * half);
    rope_tables_cpu(cs.data(), sn.data(), T, rd, 10000.0);
    DevBuf<float> d_cos((size_t)T * half), d_sin((size_t)T * half);
    rope_tables(d_cos.p, d_sin.p, T, rd, 10000.0);
    std::vector<float> acc(n), xn = randn(n), rstd((size_t)N * NH), gain = randn(NH, 0.7f, 1.5f), dout(n);
    fill_normal(acc, 4.f, 0.f);  // fp32, not rounded: ~ attention's dQ / scale
    for (size_t i = 0; i < n; i += 97) acc[i] = 0.f;
    std::uniform_real_distribution<float> u(0.5f, 2.f);
    for (float &r : rstd) r = u(dev_rng());
    for (size_t i = 0; i < n; i++) dout[i] = rbf(acc[i] * scale);  // the convert's dq (checked below)
    DevBuf<float> d_acc(n), d_rstd(rstd.size()), d_gain(NH), d_dg_ref(NH), d_dg(NH);
    DevBuf<bf16> d_xn(n), d_dq(n), d_ref(n), d_dx(n);
    put(d_acc, acc);
    put(d_xn, xn);
    put(d_rstd, rstd);
    put(d_gain, gain);
    poison(d_dq.p, n);
    attention_backward_dq_convert(d_dq.p, d_acc.p, 1, N, NH, hd, false, 0);
    {
        const std::vector<float> q = get(d_dq, n);
        const bool same = memcmp(q.data(), dout.data(), n * sizeof(float)) == 0;
        printf("  %s %-34s bitwise identical to the host's bf16(acc * scale)\n", same ? "ok  " : "FAIL", "dq convert");
        expect(same);
    }
    float *dg_ref = with_gain ? d_dg_ref.p : nullptr, *dg = with_gain ? d_dg.p : nullptr;
    const float *g = with_gain ? d_gain.p : nullptr;
    // from_out: the xn buffer given as the forward's out (the model's form; CPU twin on the xn it
    // recomputes from it)
    std::vector<float> xn_of_out(n);
    qk_xn_from_out_cpu(xn_of_out.data(), xn.data(), cs.data(), sn.data(), with_gain ? gain.data() : nullptr, B, T, NH, hd, rd);
    for (int from_out = 0; from_out < 2; from_out++)
    for (int a = 0; a < 2; a++) {
        const bf16 *g_xn = from_out ? nullptr : d_xn.p, *g_out = from_out ? d_xn.p : nullptr;
        const std::string sfx = std::string(a ? " (accumulate)" : "") + (from_out ? " from out" : "");
        std::vector<float> dx = a ? randn(n) : std::vector<float>(n, 0.f), dgain = randn(NH), r_dx = dx, r_dgain = dgain;
        qk_norm_rope_gain_backward_cpu(r_dx.data(), with_gain ? r_dgain.data() : nullptr, dout.data(),
                                       (from_out ? xn_of_out : xn).data(), rstd.data(), cs.data(), sn.data(),
                                       with_gain ? gain.data() : nullptr, B, T, NH, hd, rd);
        if (a) put(d_ref, dx), put(d_dx, dx);
        else poison(d_ref.p, n), poison(d_dx.p, n);
        put(d_dg_ref, dgain);
        put(d_dg, dgain);
        qk_partials_poison(NH);
        qk_norm_rope_gain_backward(d_ref.p, dg_ref, d_dq.p, g_xn, g_out, d_rstd.p, d_cos.p, d_sin.p, g, B, T, NH, hd, rd, a,
                                   g_scratch, 0, 3, 1);
        const std::vector<float> ref = get(d_ref, n), gr = get(d_dg_ref, NH), pr = qk_partials(NH);
        // form: 1, 2 from the accumulator; 3: form 2 of the bf16 backward on the converted dq
        for (int form = 1; form <= 3; form++) {
            const std::string what = (form == 3 ? "bf16 bwd form 2 dinp" : "from acc dinp") + sfx;
            const std::string what_g = (form == 3 ? "bf16 bwd form 2 dgain" : "from acc dgain") + sfx;
            const std::string than = form == 3 ? "form 1's" : "convert + bf16 backward (this: form " + std::to_string(form) + ")";
            if (a) put(d_dx, dx);
            else poison(d_dx.p, n);
            put(d_dg, dgain);
            qk_partials_poison(NH);
            if (form == 3)
                qk_norm_rope_gain_backward(d_dx.p, dg, d_dq.p, g_xn, g_out, d_rstd.p, d_cos.p, d_sin.p, g, B, T, NH, hd, rd, a,
                                           g_scratch, 0, 3, 2);
            else
                qk_norm_rope_gain_backward_from_acc(d_dx.p, dg, d_acc.p, scale, g_xn, g_out, d_rstd.p, d_cos.p, d_sin.p, g, B, T,
                                                    NH, hd, rd, a, g_scratch, 0, 3, form);
            const std::vector<float> got = get(d_dx, n);
            expect(check_bf16(what.c_str(), got, r_dx));
            const bool same = same_bits(got, ref);
            printf("  %s %-40s bitwise identical to %s\n", same ? "ok  " : "FAIL", what.c_str(), than.c_str());
            expect(same);
            if (with_gain) {
                const std::vector<float> gg = get(d_dg, NH);
                expect(check_sum(what_g.c_str(), gg, r_dgain));
                const bool sg = same_bits(gg, gr) && same_bits(qk_partials(NH), pr);
                printf("  %s %-40s bitwise identical to %s (partials too)\n", sg ? "ok  " : "FAIL", what_g.c_str(),
                       than.c_str());
                expect(sg);
            }
        }
    }
    dev_rng() = saved;
}

// The q/k launchers on one shape: version 2 (the head-row kernels) and, where the shape fits
// them, version 3 (the token-row kernels) with each form of its backward (1:
// qk_backward_v3_kernel, 2: qk_backward_v3f_kernel), each against the CPU twins; then version 3
// (form 1)'s outputs against version 2's, bit for bit (the same arithmetic, qk_rstd / qk_rope8 /
// qk_rope_grad8 / qk_norm_grad8; only dgain's summation order differs, checked above against the
// CPU), and form 2's backward outputs against form 1's, bit for bit, dgain and its per-block
// partials included (the same grid, the same sums in the same order).
static void test_qk(int B, int T, int NH, int hd, int rd, bool with_gain) {
    DevBuf<float> probe(8);  // cudaMalloc'ed tables are 16-byte aligned: whether v3 takes the shape
    const bool v3 = qk_v3_fits(NH, hd, rd, probe.p, probe.p);
    printf("qk_norm_rope_gain B=%d T=%d NH=%d hd=%d rd=%d gain=%d: v2%s\n", B, T, NH, hd, rd, with_gain,
           v3 ? ", v3 (token rows) backward forms 1 and 2" : " (v3 does not take this shape)");
    const QkResults r2 = check_qk_version(2, 0, B, T, NH, hd, rd, with_gain);
    if (!v3) return;
    printf("  v3, backward form 1:\n");
    const QkResults r3 = check_qk_version(3, 1, B, T, NH, hd, rd, with_gain);
    printf("  v3, backward form 2:\n");
    const QkResults r3f = check_qk_version(3, 2, B, T, NH, hd, rd, with_gain);
    using Field = const std::vector<float> QkResults::*;
    const std::pair<const char *, Field> outs[] = {
        {"out", &QkResults::out},   {"xn", &QkResults::xn},       {"rstd", &QkResults::rstd},
        {"out from xn", &QkResults::re}, {"dinp", &QkResults::dx}, {"dinp (accumulate)", &QkResults::dx_acc},
        {"dinp (in place)", &QkResults::dx_inplace}, {"dinp from out", &QkResults::dx_out},
        {"dinp (accumulate) from out", &QkResults::dx_out_acc}};
    for (const auto &o : outs) {
        const bool same = same_bits(r3.*o.second, r2.*o.second);
        printf("  %s v3 %-25s bitwise identical to v2's\n", same ? "ok  " : "FAIL", o.first);
        expect(same);
    }
    const std::pair<const char *, Field> bwd[] = {
        {"dinp", &QkResults::dx}, {"dinp (accumulate)", &QkResults::dx_acc}, {"dinp (in place)", &QkResults::dx_inplace},
        {"dinp from out", &QkResults::dx_out}, {"dinp (accumulate) from out", &QkResults::dx_out_acc},
        {"dgain", &QkResults::dgain}, {"dgain partials", &QkResults::part}, {"dgain from out", &QkResults::dgain_out},
        {"dgain partials from out", &QkResults::part_out}};
    for (const auto &o : bwd) {
        if (!with_gain && (r3.*o.second).empty()) continue;
        const bool same = same_bits(r3f.*o.second, r3.*o.second);
        printf("  %s v3 form 2 %-26s bitwise identical to form 1's\n", same ? "ok  " : "FAIL", o.first);
        expect(same);
    }
    test_qk_from_acc(B, T, NH, hd, rd, with_gain);
}

// ----------------------------------------------------------------------------
// benchmarks at the seed shapes

static void bench_all() {
    printf("\nbenchmarks (seed shapes: B=48 T=2048 N=98304 D=512 KVD=256 H=8 KV=4 hd=64 rd=16 F=1536 V=1024)\n");
    const int B = 48, T = 2048, N = B * T, D = 512, KVD = 256, H = 8, KV = 4, hd = 64, rd = 16, F = 1536, V = 1024;
    const int BG = 10240, BD = 128;
    const size_t ND = (size_t)N * D, NF = (size_t)N * F;
    DevBuf<bf16> a(NF), b(NF), c(NF), d(ND), e(ND);
    DevBuf<float> rstd((size_t)N * H), params(4 * D), grads(4 * D), fscal(4);
    DevBuf<float> cos_t((size_t)T * rd / 2), sin_t((size_t)T * rd / 2);
    DevBuf<float> tok_f((size_t)V * D), dtok((size_t)V * D), bgt_f((size_t)BG * BD), dbgt((size_t)BG * BD);
    DevBuf<bf16> tok_b((size_t)V * D), bgt_b((size_t)BG * BD);
    DevBuf<int> ids(N), hid(N);
    {
        std::vector<float> r = randn(NF);
        put(a, r);
        put(b, r);
        put(c, r);
        std::vector<float> rd_ = randn(ND);
        put(d, rd_);
        put(e, rd_);
        std::vector<float> p = randn(4 * D, 0.3f, 1.f);
        put(params, p);
        put(fscal, std::vector<float>{0.05f, 0.1f, 1.f, 1.f});
        std::vector<float> t = randn((size_t)V * D, 0.01f);
        put(tok_f, t);
        put(tok_b, t);
        std::vector<float> bt = randn((size_t)BG * BD, 0.01f);
        put(bgt_f, bt);
        put(bgt_b, bt);
        std::vector<int> ih(N);
        fill_uniform_int(ih, 0, V);
        put(ids, ih);
        bigram_hash(hid.p, ids.p, B, T, BG, 0);
        std::vector<float> rs((size_t)N * H, 1.f);
        put(rstd, rs);
        rope_tables(cos_t.p, sin_t.p, T, rd, 10000.0);
        cudaCheck(cudaMemset(dtok.p, 0, dtok.n * sizeof(float)));
        cudaCheck(cudaMemset(dbgt.p, 0, dbgt.n * sizeof(float)));
        cudaCheck(cudaMemset(grads.p, 0, grads.n * sizeof(float)));
    }
    const double b2 = 2, b4 = 4;  // bytes per bf16 / fp32 value
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d", N);
    bench_row("bigram_hash", shape, bench_ms([&] { bigram_hash(hid.p, ids.p, B, T, BG, 0); }), N * 8.0, 0);
    snprintf(shape, sizeof shape, "N=%d C=%d rows=%d", N, BD, BG);
    bench_row("embedding_forward bf16", shape, bench_ms([&] { embedding_forward(a.p, hid.p, bgt_b.p, N, BD, BG, 0); }),
              N * (BD * b2 + 4.0) + BG * BD * b2, 0);
    bench_row("embedding_forward fp32", shape, bench_ms([&] { embedding_forward(a.p, hid.p, bgt_f.p, N, BD, BG, 0); }),
              N * (BD * b2 + 4.0) + BG * BD * b4, 0);
    bench_row("embedding_backward", shape,
              bench_ms([&] { embedding_backward(dbgt.p, a.p, hid.p, N, BD, BG, g_scratch, 0); }),
              N * (BD * b2 + 4.0) + 2.0 * BG * BD * b4, 0);
    snprintf(shape, sizeof shape, "N=%d D=%d V=%d", N, D, V);
    bench_row("embedding_backward", shape,
              bench_ms([&] { embedding_backward(dtok.p, d.p, ids.p, N, D, V, g_scratch, 0); }),
              N * (D * b2 + 4.0) + 2.0 * V * D * b4, 0);
    bench_row("embed_sum_forward bf16", shape, bench_ms([&] { embed_sum_forward(e.p, ids.p, tok_b.p, d.p, fscal.p, N, D, V, 0); }),
              N * (2 * D * b2 + 4.0) + V * D * b2, 0);
    bench_row("embed_sum_backward", shape,
              bench_ms([&] { embed_sum_backward(dtok.p, e.p, fscal.p + 3, d.p, ids.p, a.p, fscal.p, N, D, V, false, g_scratch, 0); }),
              N * (3 * D * b2 + 4.0) + 2.0 * V * D * b4, 0);
    snprintf(shape, sizeof shape, "N=%d C=%d", N, D);
    bench_row("rmsnorm_forward", shape, bench_ms([&] { rmsnorm_forward(e.p, rstd.p, d.p, N, D, 0.5f, 0); }),
              ND * 2 * b2 + N * b4, 0);
    bench_row("rmsnorm_backward", shape, bench_ms([&] { rmsnorm_backward(e.p, a.p, d.p, rstd.p, N, D, 0.5f, false, 0); }),
              ND * 3 * b2 + N * b4, 0);
    bench_row("rmsnorm_backward_from_out acc", shape,
              bench_ms([&] { rmsnorm_backward_from_out(e.p, a.p, d.p, rstd.p, N, D, 0.5f, true, 0); }), ND * 4 * b2 + N * b4, 0);
    bench_row("rmsnorm_backward acc", shape, bench_ms([&] { rmsnorm_backward(e.p, a.p, d.p, rstd.p, N, D, 0.5f, true, 0); }),
              ND * 4 * b2 + N * b4, 0);
    snprintf(shape, sizeof shape, "B=%d T=%d C=%d", B, T, D);
    bench_row("smear_forward", shape, bench_ms([&] { smear_forward(e.p, d.p, params.p, B, T, D, 0); }), ND * 2 * b2, 0);
    bench_row("smear_backward", shape,
              bench_ms([&] { smear_backward(e.p, grads.p, a.p, d.p, params.p, B, T, D, false, g_scratch, 0); }),
              ND * 3 * b2, 0);
    snprintf(shape, sizeof shape, "N=%d C=%d", N, D);
    bench_row("resid_mix_forward", shape, bench_ms([&] { resid_mix_forward(e.p, d.p, a.p, params.p, N, D, 0); }),
              ND * 3 * b2, 0);
    bench_row("resid_mix_backward acc dx0", shape,
              bench_ms([&] { resid_mix_backward(b.p, e.p, grads.p, a.p, d.p, c.p, params.p, N, D, false, true, g_scratch, 0); }),
              ND * 6 * b2, 0);
    bench_row("residual_scale_forward", shape, bench_ms([&] { residual_scale_forward(e.p, e.p, params.p, d.p, N, D, 0); }),
              ND * 3 * b2, 0);
    bench_row("residual_scale_backward", shape,
              bench_ms([&] { residual_scale_backward(nullptr, grads.p, e.p, d.p, params.p, a.p, N, D, false, false, g_scratch, 0); }),
              ND * 3 * b2, 0);
    // the block-start backward, version 1 (reads ln) and 2 (rebuilds it), one after the other, as
    // the model's layers call it: plain; with an add (a block above an encoder skip output); with
    // a skip (a decoder block). Bytes: bf16 N*C tensors read and written (+ rstd): plain 8 (dln,
    // ln, dres r/w, resid, x0, dx0 r/w), add 9, skip 10 (enc in, denc out); version 2 one less
    for (int version = 1; version <= 2; version++) {
        const double ln = version == 1 ? 1 : 0;  // N*C read for ln
        bf16 *enc = c.p + ND, *denc = b.p + ND, *add = a.p + ND;
        snprintf(shape, sizeof shape, "v%d N=%d C=%d", version, N, D);
        bench_row("rmsnorm_resid_mix_backward acc", shape,
                  bench_ms([&] { rmsnorm_resid_mix_backward(b.p, e.p, grads.p, a.p, d.p, rstd.p, c.p, a.p, params.p, N, D, 0.5f,
                                                            true, g_scratch, 0, ResidMixSkip(), version); }),
                  ND * (7 + ln) * b2 + N * b4, 0);
        ResidMixSkip sa, ss;
        sa.add = add;
        ss.enc = enc, ss.skip_w = params.p + 2 * D, ss.denc = denc, ss.dskip_w = grads.p + 2 * D;
        bench_row("rmsnorm_resid_mix_backward add", shape,
                  bench_ms([&] { rmsnorm_resid_mix_backward(b.p, e.p, grads.p, a.p, d.p, rstd.p, c.p, a.p, params.p, N, D, 0.5f,
                                                            true, g_scratch, 0, sa, version); }),
                  ND * (8 + ln) * b2 + N * b4, 0);
        bench_row("rmsnorm_resid_mix_backward skip", shape,
                  bench_ms([&] { rmsnorm_resid_mix_backward(b.p, e.p, grads.p, a.p, d.p, rstd.p, c.p, a.p, params.p, N, D, 0.5f,
                                                            true, g_scratch, 0, ss, version); }),
                  ND * (9 + ln) * b2 + N * b4, 0);
    }
    snprintf(shape, sizeof shape, "N=%d C=%d", N, D);
    bench_row("resid_mix_rmsnorm_forward", shape,
              bench_ms([&] { resid_mix_rmsnorm_forward(e.p, b.p, rstd.p, d.p, a.p, params.p, N, D, 0.5f, 0); }),
              ND * 4 * b2 + N * b4, 0);
    bench_row("residual_scale_rmsnorm_fwd", shape,
              bench_ms([&] { residual_scale_rmsnorm_forward(e.p, b.p, rstd.p, d.p, params.p, a.p, N, D, 0.5f, 0); }),
              ND * 4 * b2 + N * b4, 0);
    snprintf(shape, sizeof shape, "N=%d F=%d", N, F);
    bench_row("relu2_forward", shape, bench_ms([&] { relu2_forward(b.p, a.p, NF, 0); }), NF * 2 * b2, 0);
    bench_row("relu2_backward", shape, bench_ms([&] { relu2_backward(c.p, b.p, a.p, NF, false, 0); }), NF * 3 * b2, 0);
    bench_row("relu2_backward_from_out", shape, bench_ms([&] { relu2_backward_from_out(c.p, c.p, a.p, NF, false, 0); }),
              NF * 3 * b2, 0);
    snprintf(shape, sizeof shape, "N=%d C=%d", N, KVD);
    bench_row("scalar_scale_forward acc", shape,
              bench_ms([&] { scalar_scale_forward(e.p, d.p, fscal.p + 1, (size_t)N * KVD, true, 0); }),
              (double)N * KVD * 3 * b2, 0);
    bench_row("scalar_scale_backward", shape,
              bench_ms([&] { scalar_scale_backward(e.p, fscal.p + 3, d.p, a.p, fscal.p + 1, (size_t)N * KVD, false, g_scratch, 0); }),
              (double)N * KVD * 3 * b2, 0);
    // the q/k backward from attention's fp32 dQ accumulator against what it replaces, attention's
    // dq pass then the bf16 backward (v3), on the same inputs; and that dq pass alone
    {
        DevBuf<float> accf(ND);
        put(accf, randn(ND, 4.f));
        const float sc = attention_backward_dq_acc_scale();
        const double q_acc = ND * b4, q_conv = ND * (b4 + b2), q_bwd = ND * 3 * b2 + (double)N * H * b4;
        snprintf(shape, sizeof shape, "q: N=%d H=%d hd=%d", N, H, hd);
        bench_row("attention dq convert", shape, bench_ms([&] { attention_backward_dq_convert(b.p, accf.p, 1, N, H, hd, false, 0); }),
                  q_conv, 0);
        bench_row("dq convert + qk bwd from out", shape, bench_ms([&] {
                      attention_backward_dq_convert(b.p, accf.p, 1, N, H, hd, false, 0);
                      qk_norm_rope_gain_backward(a.p, grads.p, b.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, params.p, B, T, H, hd, rd,
                                                 false, g_scratch, 0, 3);
                  }),
                  q_conv + q_bwd, 0);
        // the token-row backward's two forms (QK3_BWD), from the accumulator and from bf16
        for (int form = 1; form <= 2; form++) {
            snprintf(shape, sizeof shape, "q form %d: N=%d H=%d hd=%d", form, N, H, hd);
            bench_row("qk bwd from acc, from out", shape, bench_ms([&] {
                          qk_norm_rope_gain_backward_from_acc(a.p, grads.p, accf.p, sc, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, params.p,
                                                              B, T, H, hd, rd, false, g_scratch, 0, 3, form);
                      }),
                      q_acc + ND * 2 * b2 + (double)N * H * b4, 0);
            bench_row("qk bwd from out (bf16)", shape, bench_ms([&] {
                          qk_norm_rope_gain_backward(a.p, grads.p, b.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, params.p, B, T, H, hd,
                                                     rd, false, g_scratch, 0, 3, form);
                      }),
                      q_bwd, 0);
        }
        const double nk = (double)N * KVD, k_conv = nk * (b4 + b2), k_bwd = nk * 3 * b2 + (double)N * KV * b4;
        snprintf(shape, sizeof shape, "k: N=%d KV=%d hd=%d", N, KV, hd);
        bench_row("attention dq convert", shape, bench_ms([&] { attention_backward_dq_convert(b.p, accf.p, 1, N, KV, hd, false, 0); }),
                  k_conv, 0);
        bench_row("dq convert + qk bwd from out", shape, bench_ms([&] {
                      attention_backward_dq_convert(b.p, accf.p, 1, N, KV, hd, false, 0);
                      qk_norm_rope_gain_backward(a.p, nullptr, b.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, nullptr, B, T, KV, hd, rd,
                                                 false, g_scratch, 0, 3);
                  }),
                  k_conv + k_bwd, 0);
        for (int form = 1; form <= 2; form++) {
            snprintf(shape, sizeof shape, "k form %d: N=%d KV=%d hd=%d", form, N, KV, hd);
            bench_row("qk bwd from acc, from out", shape, bench_ms([&] {
                          qk_norm_rope_gain_backward_from_acc(a.p, nullptr, accf.p, sc, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, nullptr,
                                                              B, T, KV, hd, rd, false, g_scratch, 0, 3, form);
                      }),
                      nk * b4 + nk * 2 * b2 + (double)N * KV * b4, 0);
            bench_row("qk bwd from out (bf16)", shape, bench_ms([&] {
                          qk_norm_rope_gain_backward(a.p, nullptr, b.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, nullptr, B, T, KV, hd,
                                                     rd, false, g_scratch, 0, 3, form);
                      }),
                      k_bwd, 0);
        }
    }
    // the q/k kernels: v2 (head-row kernels) and v3 (token-row kernels, the default) on the same
    // inputs, one after the other; bytes: what each must move (bf16 tensors + fp32 rstd)
    for (int version = 2; version <= 3; version++) {
        snprintf(shape, sizeof shape, "q v%d: N=%d H=%d hd=%d", version, N, H, hd);
        bench_row("qk_norm_rope_gain_forward", shape,
                  bench_ms([&] { qk_norm_rope_gain_forward(a.p, b.p, rstd.p, d.p, cos_t.p, sin_t.p, params.p, B, T, H, hd, rd, 0,
                                                           version); }),
                  ND * 3 * b2 + (double)N * H * b4, 0);
        bench_row("qk_norm_rope_gain_backward from out", shape,
                  bench_ms([&] { qk_norm_rope_gain_backward(a.p, grads.p, d.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, params.p, B, T, H,
                                                            hd, rd, false, g_scratch, 0, version); }),
                  ND * 3 * b2 + (double)N * H * b4, 0);
        bench_row("qk_rope_gain_forward", shape,
                  bench_ms([&] { qk_rope_gain_forward(a.p, b.p, cos_t.p, sin_t.p, params.p, B, T, H, hd, rd, 0, version); }),
                  ND * 2 * b2, 0);
        snprintf(shape, sizeof shape, "k v%d: N=%d KV=%d hd=%d", version, N, KV, hd);
        bench_row("qk_norm_rope_gain_forward", shape,
                  bench_ms([&] { qk_norm_rope_gain_forward(a.p, b.p, rstd.p, d.p, cos_t.p, sin_t.p, nullptr, B, T, KV, hd, rd, 0,
                                                           version); }),
                  (double)N * KVD * 3 * b2 + (double)N * KV * b4, 0);
        bench_row("qk_rope_gain_forward", shape,
                  bench_ms([&] { qk_rope_gain_forward(a.p, b.p, cos_t.p, sin_t.p, nullptr, B, T, KV, hd, rd, 0, version); }),
                  (double)N * KVD * 2 * b2, 0);
        bench_row("qk_norm_rope_gain_backward from out", shape,
                  bench_ms([&] { qk_norm_rope_gain_backward(a.p, nullptr, d.p, nullptr, e.p, rstd.p, cos_t.p, sin_t.p, nullptr, B, T, KV,
                                                            hd, rd, false, g_scratch, 0, version); }),
                  (double)N * KVD * 3 * b2 + (double)N * KV * b4, 0);
    }
}

int main(int argc, char **argv) {
    const bool bench = check_args(argc, argv, "dev_layers");
    DeviceInfo dev = device_info();
    printf("dev_layers on %s (%d SMs, sm_%d%d)\n", dev.name, dev.sm_count, dev.cc_major, dev.cc_minor);
    scratch_init();

    test_bigram_hash(1, 1, 2, 10);
    test_bigram_hash(3, 333, 10240, 1024);
    test_bigram_hash(2, 1030, 2048, 70000);  // ids >= 59139: the int32 products wrap
    test_bigram_hash(4, 2048, 10240, 65536);

    test_embedding_forward<float>(1, 8, 1);
    test_embedding_forward<float>(333, 96, 50);
    test_embedding_forward<bf16>(333, 96, 50);
    test_embedding_forward<bf16>(4096, 512, 1024);
    test_embedding_forward<float>(4096, 128, 10240);

    test_embedding_backward(1, 8, 3, 0.0);
    test_embedding_backward(333, 96, 50, 0.5);
    test_embedding_backward(2500, 64, 7, 0.0);       // long runs over many pieces
    test_embedding_backward(5000, 128, 10240, 0.3);
    test_embedding_backward(70001, 8, 2, 0.9);       // one run crosses ~1000 pieces
    test_embedding_backward(98304, 512, 1024, 0.3);  // the seed shape of tok_emb

    test_embed_sum<float>(1, 8, 5, false);
    test_embed_sum<bf16>(333, 96, 50, true);
    test_embed_sum<float>(4096, 512, 1024, false);

    test_rmsnorm(1, 8, 1.f);
    test_rmsnorm(333, 96, 0.5f);
    test_rmsnorm(4099, 512, 1.f / std::sqrt(3.f));
    test_rmsnorm(77, 1536, 1.f);  // longer than the backward's register cache
    test_rmsnorm(5, 2056, 1.f);   // longer than the forward's too

    test_smear(1, 1, 8);
    test_smear(3, 111, 96);
    test_smear(2, 1030, 512);
    test_smear(2, 7, 4104);  // 513 vectors a row: 3 channel slices

    test_resid_mix(1, 8);
    test_resid_mix(333, 96);
    test_resid_mix(4099, 512);
    test_resid_mix(37, 4104);

    test_residual_scale(1, 8);
    test_residual_scale(333, 96);
    test_residual_scale(4099, 512);
    test_residual_scale(37, 4104);

    test_fold_scale(3, 1, 8);
    test_fold_scale(77, 96, 333);    // neither a multiple of the 32 x 32 tiles
    test_fold_scale(300, 512, 1536);  // the MLP proj's shape (C = D, K = F)
    test_fold_scale(50, 37, 4104);   // rows longer than many block strides

    test_residual_rmsnorm(1, 8, 1.f);
    test_residual_rmsnorm(333, 96, 0.5f);
    test_residual_rmsnorm(4099, 512, 1.f / std::sqrt(5.f));
    test_residual_rmsnorm(77, 1536, 1.f);  // longer than the register cache
    test_residual_rmsnorm(3, 2056, 1.f);

    test_block_start(1, 8, false);
    test_block_start(333, 96, true);
    test_block_start(4099, 512, false);
    test_block_start(20011, 512, true);
    test_block_start(4099, 512, true, true);  // the first decoder block: its skip is the output being written
    test_block_start(77, 264, true);  // 33 vectors a row: the second register set mostly idle

    test_rmsnorm_resid_mix(1, 8, 1.f);
    test_rmsnorm_resid_mix(333, 96, 0.5f);
    test_rmsnorm_resid_mix(50, 264, 1.f);                  // 33 vectors a row: the second register set mostly idle
    test_rmsnorm_resid_mix(20011, 512, 1.f / std::sqrt(3.f));  // more rows than a wave of warps
    test_rmsnorm_resid_mix(77, 1024, 1.f);                 // the longest rows it takes
    test_rmsnorm_resid_mix_skip(1, 8, true, 0);
    test_rmsnorm_resid_mix_skip(333, 96, true, 2);
    test_rmsnorm_resid_mix_skip(4099, 512, true, 0);
    test_rmsnorm_resid_mix_skip(20011, 512, true, 2);          // the first decoder block: add = its own denc
    test_rmsnorm_resid_mix_skip(777, 512, false, 1);           // a block above an encoder skip output
    test_rmsnorm_resid_mix_skip(50, 1024, true, 1);
    test_rmsnorm_resid_mix_skip(4099, 512, true, 2, true);     // the first decoder block as the model runs it: enc = prev
    test_rmsnorm_resid_mix_skip(333, 256, true, 0, true);

    test_relu2(1);
    test_relu2(7);
    test_relu2((size_t)333 * 97);
    test_relu2((size_t)4099 * 1536);

    test_scalar_scale(3);
    test_scalar_scale((size_t)333 * 96 + 5);
    test_scalar_scale((size_t)(1 << 20) + 3);

    test_qk(1, 1, 1, 8, 4, true);
    test_qk(2, 1030, 8, 64, 16, true);   // T > 1024: the NTK base
    test_qk(2, 1030, 4, 64, 16, false);  // k: no gain
    test_qk(3, 50, 4, 32, 16, true);
    test_qk(1, 33, 3, 96, 96, true);     // 12 lanes a head: 2 head-rows a warp, 8 lanes idle; RoPE on every dim
    test_qk(2, 17, 8, 64, 4, true);      // RoPE partners inside one lane
    test_qk(1, 9, 2, 64, 64, false);
    test_qk(1, 300, 5, 8, 8, true);      // 32 head-rows a warp
    test_qk(2, 19, 6, 40, 8, true);      // 5 lanes a head: 6 head-rows a warp, 2 lanes idle
    test_qk(1, 20, 3, 256, 32, true);    // a head-row per warp
    test_qk(3, 77, 3, 64, 16, true);     // 3 heads: the backward's grid rounded to a multiple of 3
    test_qk(8, 2048, 8, 64, 16, true);   // more head-rows than a wave: the backward loops
    test_qk(4, 2048, 4, 64, 16, true);   // the same with k's shape: v3 takes 2 token rows a warp
    test_qk(5, 411, 4, 64, 16, false);   // an odd number of rows: v3's last warp has one
    test_qk(2, 33, 16, 64, 16, true);    // 1024 values a token row: v3's longest (4 vectors a lane)
    test_qk(3, 37, 5, 128, 16, true);    // 16 lanes a head, 5 heads: v3 with 3 vectors a lane, 12 lanes idle
    test_qk(1, 45, 2, 16, 16, true);     // 2 lanes a head, RoPE on every dim
    test_qk(3, 41, 1, 64, 32, true);     // 1 head: 8 of a warp's 32 lanes; rd = 32: 2 lanes in each part of RoPE
    test_qk(3, 1001, 8, 64, 48, false);  // q's shape, rd = 48 (3 lanes a part); N = 3003: the last block's rows past N
    test_qk(5, 1999, 8, 64, 16, true);   // q's shape, N = 9995: several grid steps, the last one partial
    test_qk(1, 77, 3, 64, 64, false);    // 3 heads, RoPE on every dim, no gain, an odd N (v3: 2 rows a warp)
    test_qk(2, 100, 20, 64, 16, true);   // 1280 values a token row: too long for v3 (v2 only)
    test_qk_from_acc(1, 1, 8, 64, 16, true);     // one token row (q's shape)
    test_qk_from_acc(1, 333, 8, 64, 16, true);   // an odd N, q's shape: rows past N in the last block
    test_qk_from_acc(3, 111, 4, 64, 16, false);  // an odd N, k's shape: the last warp has one of its 2 rows

    if (check_verdict("dev_layers")) return 1;
    if (bench) bench_all();
    cudaFreeCheck(g_scratch.ptr);
    return 0;
}
