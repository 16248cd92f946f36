// gradcheck: checks common/model_cpu.h, the CPU reference of the model.
//
//   build/gradcheck            all checks below; prints a table per check, exits 1 on a failure
//   build/gradcheck --quick    3 sampled elements per tensor instead of 20 (a fast look)
//   build/gradcheck --bench    time the float forward/backward on a small config and exit
//
// 1. Finite differences, in double, on a tiny config that still has every feature: 5 layers
//    (2 encoder, 3 decoder, 2 U-Net skips), XSA on the last 2, value embeddings on an encoder and
//    a decoder layer, GQA 2:1, partial RoPE (4 of 8 dims), a small logit softcap so the tanh is
//    far from linear. Every tensor starts random (zero-initialized ones too, so every path
//    carries gradient). Each tensor's gradient is checked along a random direction at T = 1032
//    (> 1024: the NTK-scaled RoPE base) and at T = 48 (two sequences), and element by element
//    (20 of them) at T = 48; relative error below 1e-6 everywhere (details at check_gradients).
// 2. QAT: with fake quantization on, the gradient must equal the plain backward evaluated at the
//    fake-quantized weights (straight-through), bit for bit; and fake_quant on known values.
// 3. float vs double: the same weights and tokens through ModelCPU<float> and ModelCPU<double>:
//    loss, logits and every gradient tensor agree to a tolerance derived from FLT_EPSILON.
// 4. model_init: the reference's init rules (orthogonal, gains, zeros, the small-dims fallback).
#include <cfloat>
#include <functional>

#include "../common/model_cpu.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// set the OpenMP thread count, returning the previous one (results do not depend on it)
static int set_threads(int n) {
#ifdef _OPENMP
    int prev = omp_get_max_threads();
    omp_set_num_threads(n);
    return prev;
#else
    return n;
#endif
}

static int g_failures = 0;
static void expect(bool ok, const char *what) {
    if (!ok) { printf("FAIL: %s\n", what); g_failures++; }
}

// The tiny config with every feature.
static Config tiny_config() {
    Config c;
    config_defaults(c);
    c.vocab_size = 64;
    c.num_layers = 5;
    c.model_dim = 16;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.mlp_mult = 2;
    c.bigram_vocab_size = 32;
    c.bigram_dim = 8;
    c.xsa_last_n = 2;
    c.rope_dims = 4;
    c.ve_enabled = 1;
    c.ve_dim = 4;
    c.ve_layers = "1,3";
    c.logit_softcap = 5;
    config_derive(c);
    return c;
}

// Random weights for every tensor, at scales where every op is in its interesting range.
template <typename real>
static void random_params(ModelCPU<real> &m, uint64_t seed) {
    Rng rng(seed);
    const Config &c = m.config;
    for (const TensorSpec &t : m.tensors.specs) {
        real *w = m.params_mem.data() + t.offset;
        double mean = 0, std = 1;
        if (t.shape.size() == 2 && t.group == OPT_MUON) std = 1.0 / std::sqrt((double)t.shape[1]);  // linear: ~unit gain
        if (t.name == "tok_emb.weight") std = 0.6;  // logits of a few units: the softcap bends them
        if (t.name.find("scale") != std::string::npos) { mean = 0.8; std = 0.3; }  // attn/mlp/bigram/VE scales
        if (t.name.find("q_gain") != std::string::npos) { mean = 1.5; std = 0.3; }
        if (t.name.find("skip_weights") != std::string::npos) { mean = 1; std = 0.3; }
        for (size_t i = 0; i < t.numel; i++) w[i] = (real)(mean + std * rng.normal());
        if (t.name.find("resid_mix") != std::string::npos)  // mix[0] near 1, mix[1] clearly nonzero
            for (size_t i = 0; i < t.numel; i++) w[i] = (real)((i < (size_t)c.model_dim ? 1.0 : 0.0) + 0.4 * rng.normal());
    }
}

static void random_tokens(std::vector<int> &ids, std::vector<int> &targets, int n, int V, uint64_t seed) {
    Rng rng(seed);
    ids.resize(n);
    targets.resize(n);
    for (int i = 0; i < n; i++) ids[i] = (int)(rng.uniform() * V);
    for (int i = 0; i < n; i++) targets[i] = (int)(rng.uniform() * V);
}

// ----------------------------------------------------------------------------
// 1. finite differences
//
// A central difference (f(h) - f(-h)) / 2h with h = 1e-5 first: its truncation error O(h^2) is
// ~1e-10 relative, its roundoff (the loss ~5.7 is reproducible to ~1e-15) ~5e-11 absolute.
// The loss is not everywhere smooth, though: relu^2 has a jump in its second derivative, and a
// step that straddles one (a pre-activation crosses zero within the step) costs an error O(h);
// with T = 1032 tokens some pre-activation is always near zero. A check that misses is
// retried with h = 3e-6 and 3e-5, then with the 4-point stencil
// (-f(2h) + 8f(h) - 8f(-h) + f(-2h)) / 12h at h = 1e-4, 3e-5, 1e-3, and keeps its best result:
// a wrong gradient cannot agree at every step size (the negative control below shows a
// planted 1e-5 error is caught). Two measures per tensor:
//   directional: along a random unit direction u over the whole tensor, the derivative of
//     the loss against g.u, relative to |g| (so every element's error counts, small ones too);
//   elements: the largest-gradient element and random ones among those with |g| >= 5% of the
//     largest, each |analytic - numeric| / max(|analytic|, |numeric|). (Below that, roundoff
//     dominates a per-element relative error; the directional measure covers them.)

struct FdResult { double dir_err = 0, elem_err = 0, gmax = 0; int elems = 0; };

static const double FD_TOL = 1e-6;
static long g_evals = 0;  // forward passes run by the finite differences

// |analytic - numeric| / scale at the best of the estimates (stopping at the first that passes)
static double fd_error(const std::function<double(double)> &f, double analytic, double scale) {
    double best = INFINITY;
    // {h, 2 or 4 points}
    static const double steps[][2] = {{1e-5, 2}, {3e-6, 2}, {3e-5, 2}, {1e-4, 4}, {3e-5, 4}, {1e-3, 4}};
    for (const auto &st : steps) {
        const double h = st[0];
        double num = st[1] == 2 ? (f(h) - f(-h)) / (2 * h) : (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h);
        double s = scale > 0 ? scale : std::max({std::fabs(analytic), std::fabs(num), 1e-300});
        best = std::min(best, std::fabs(analytic - num) / s);
        if (best < FD_TOL) break;
    }
    return best;
}

// One config and batch: the analytic gradient, then finite differences for every tensor.
static std::vector<FdResult> finite_differences(const Config &c, int B, int T, int samples, uint64_t seed) {
    ModelCPU<double> m;
    model_build(m, c);
    random_params(m, 42);
    std::vector<int> ids, targets;
    random_tokens(ids, targets, B * T, c.vocab_size, seed);
    double t0 = now_seconds();
    double loss = model_forward(m, ids.data(), targets.data(), B, T);
    model_zero_grad(m);
    model_backward(m);
    long evals0 = g_evals;
    auto loss_at = [&]() { g_evals++; return model_forward(m, ids.data(), targets.data(), B, T); };
    Rng rng(seed * 7919 + 1);
    std::vector<FdResult> res;
    for (const TensorSpec &t : m.tensors.specs) {
        FdResult r;
        double *w = m.params_mem.data() + t.offset;
        const double *g = m.grads_mem.data() + t.offset;
        size_t imax = 0;
        for (size_t i = 0; i < t.numel; i++)
            if (std::fabs(g[i]) > r.gmax) { r.gmax = std::fabs(g[i]); imax = i; }
        // directional
        std::vector<double> u(t.numel), keep(w, w + t.numel);
        double un = 0, gu = 0, gn = 0;
        for (size_t i = 0; i < t.numel; i++) { u[i] = rng.normal(); un += u[i] * u[i]; }
        un = std::sqrt(un);
        for (size_t i = 0; i < t.numel; i++) { u[i] /= un; gu += g[i] * u[i]; gn += g[i] * g[i]; }
        r.dir_err = fd_error([&](double d) {
            for (size_t i = 0; i < t.numel; i++) w[i] = keep[i] + d * u[i];
            double l = loss_at();
            std::copy(keep.begin(), keep.end(), w);
            return l;
        }, gu, std::max(std::sqrt(gn), 1e-300));
        // elements
        std::vector<size_t> cand, idx;
        if (samples > 0) idx.push_back(imax);
        for (size_t i = 0; i < t.numel; i++) if (i != imax && std::fabs(g[i]) >= 0.05 * r.gmax) cand.push_back(i);
        while ((int)idx.size() < samples && !cand.empty()) {
            size_t k = (size_t)(rng.uniform() * cand.size());
            idx.push_back(cand[k]);
            cand.erase(cand.begin() + k);
        }
        for (size_t i : idx) {
            double e = fd_error([&](double d) {
                double k = w[i];
                w[i] = k + d;
                double l = loss_at();
                w[i] = k;
                return l;
            }, g[i], 0);
            r.elem_err = std::max(r.elem_err, e);
        }
        r.elems = (int)idx.size();
        res.push_back(r);
    }
    double dt = now_seconds() - t0;
    printf("B=%d T=%d: loss %.6f; 1 direction + %d element(s) per tensor: %ld forwards in %.1f s\n", B, T, loss, samples,
           g_evals - evals0, dt);
    // negative control: the same check must catch a gradient that is off by 1e-5 (relative)
    if (samples > 0) {
        const TensorSpec &t = m.tensors.specs[m.tensors.find("blocks.1.attn.c_k.weight")];
        double *w = m.params_mem.data() + t.offset;
        const double *g = m.grads_mem.data() + t.offset;
        size_t i = 0;
        for (size_t j = 0; j < t.numel; j++) if (std::fabs(g[j]) > std::fabs(g[i])) i = j;
        double e = fd_error([&](double d) {
            double k = w[i];
            w[i] = k + d;
            double l = loss_at();
            w[i] = k;
            return l;
        }, g[i] * (1 + 1e-5), 0);
        printf("negative control: a gradient off by 1e-5 shows relative error %.2e: %s\n", e,
               e > FD_TOL ? "caught" : "MISSED");
        expect(e > FD_TOL, "finite differences catch a planted 1e-5 gradient error");
    }
    return res;
}

static void check_gradients(int samples) {
    Config c = tiny_config();
    const double tol = FD_TOL;
    printf("== finite differences (double): L=%ld (encoder %d, decoder %d, skips %d) D=%ld H=%ld KV=%ld hd=%d, RoPE on %d "
           "of %d dims, V=%ld, bigram %ldx%ld, XSA last %ld, VE dim %ld on layers %s, softcap %g, tolerance %.0e\n",
           c.num_layers, c.num_encoder, c.num_decoder, c.num_skip, c.model_dim, c.num_heads, c.num_kv_heads, c.head_dim,
           c.rope_dims_eff, c.head_dim, c.vocab_size, c.bigram_vocab_size, c.bigram_dim, c.xsa_last_n, c.ve_dim,
           c.ve_layers.c_str(), c.logit_softcap, tol);
    // T > 1024: the NTK-scaled RoPE base (a direction per tensor: each forward is costly here)
    std::vector<FdResult> lng = finite_differences(c, 1, 1032, 0, 7);
    // a short batch of two sequences: many elements per tensor. One thread: on tensors this
    // small the threads' barriers cost more than the work (much more on a busy machine).
    int threads = set_threads(1);
    std::vector<FdResult> sht = finite_differences(c, 2, 48, samples, 8);
    set_threads(threads);
    TensorList tl = build_tensor_list(c);
    printf("%-28s %11s | %11s %11s %11s\n", "tensor", "T=1032 dir", "T=48 dir", "max elem", "max|grad|");
    double worst = 0;
    for (size_t k = 0; k < tl.specs.size(); k++) {
        double e = std::max({lng[k].dir_err, sht[k].dir_err, sht[k].elem_err});
        worst = std::max(worst, e);
        bool ok = e < tol && lng[k].gmax > 0 && sht[k].gmax > 0;
        char el[32];
        snprintf(el, sizeof el, "%.2e (%d)", sht[k].elem_err, sht[k].elems);
        printf("%-28s %11.2e | %11.2e %15s %11.2e%s\n", tl.specs[k].name.c_str(), lng[k].dir_err, sht[k].dir_err, el,
               sht[k].gmax, ok ? "" : "  FAIL");
        if (!ok) g_failures++;
    }
    printf("worst relative error %.2e (tolerance %.0e); a zero gradient anywhere fails too (unexercised path)\n\n", worst, tol);
}

// ----------------------------------------------------------------------------
// 2. QAT

static void check_qat() {
    printf("== QAT fake quantization and its straight-through gradient\n");
    // fake_quant on known values. Row 0: max 3.875 -> s = 0.125 exactly: 2.5 -> 2 and 3.5 -> 4
    // (half to even), -2.5 -> -2, the max -> 31. Row 1: max 0.4 < 1 -> s = 1/31.
    double w[2][4] = {{3.875, 0.3125, 0.4375, -0.3125}, {0.01, -0.4, 0.2, 0.0}};
    double want[2][4] = {{3.875, 0.25, 0.5, -0.25}, {0.0, -12.0 / 31, 6.0 / 31, 0.0}};
    double out[2][4];
    fake_quant_cpu(&out[0][0], &w[0][0], 2, 4);
    bool ok = true;
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 4; i++) ok = ok && std::fabs(out[r][i] - want[r][i]) < 1e-15;
    expect(ok, "fake_quant_cpu on known values (half-to-even rounding, 1/31 scale floor)");
    printf("fake_quant known values: %s\n", ok ? "ok" : "FAIL");

    Config c = tiny_config();
    const int B = 2, T = 40;
    std::vector<int> ids, targets;
    random_tokens(ids, targets, B * T, c.vocab_size, 11);
    ModelCPU<double> mq, mp;
    model_build(mq, c);
    model_build(mp, c);
    random_params(mq, 5);
    // QAT on
    double loss_plain = model_forward(mq, ids.data(), targets.data(), B, T);
    mq.qat = QAT_INT6;
    double loss_q = model_forward(mq, ids.data(), targets.data(), B, T);
    model_zero_grad(mq);
    model_backward(mq);
    // plain backward at the fake-quantized weights
    mp.params_mem = mq.qparams_mem;
    double loss_p = model_forward(mp, ids.data(), targets.data(), B, T);
    model_zero_grad(mp);
    model_backward(mp);
    double diff = 0;
    for (size_t i = 0; i < mq.grads_mem.size(); i++) diff = std::max(diff, std::fabs(mq.grads_mem[i] - mp.grads_mem[i]));
    printf("loss plain %.9f, QAT %.9f, plain at quantized weights %.9f; max |grad diff| %.3e\n", loss_plain, loss_q, loss_p, diff);
    expect(loss_q == loss_p, "QAT forward equals the plain forward at the fake-quantized weights");
    expect(diff == 0, "QAT gradient equals the plain gradient at the fake-quantized weights (straight-through)");
    expect(std::fabs(loss_q - loss_plain) > 1e-6, "QAT changes the loss (the linear weights were quantized)");
    // only the linear weights were quantized
    size_t changed_other = 0;
    std::vector<char> is_linear(mq.params_mem.size(), 0);
    visit_linear_weights(mq.params, c, [&](double *w_, int rows, int cols) {
        size_t off = w_ - mq.params_mem.data();
        for (size_t i = 0; i < (size_t)rows * cols; i++) is_linear[off + i] = 1;
    });
    for (size_t i = 0; i < mq.params_mem.size(); i++)
        if (!is_linear[i] && mq.qparams_mem[i] != mq.params_mem[i]) changed_other++;
    expect(changed_other == 0, "QAT leaves every non-linear tensor (embeddings, scales) untouched");
    printf("%s\n\n", g_failures ? "" : "QAT: ok");
}

// ----------------------------------------------------------------------------
// 3. float vs double

static void check_float_vs_double() {
    printf("== float vs double (same weights, same tokens)\n");
    Config c = tiny_config();
    const int B = 2, T = 1030;
    std::vector<int> ids, targets;
    random_tokens(ids, targets, B * T, c.vocab_size, 13);
    ModelCPU<double> md;
    ModelCPU<float> mf;
    model_build(md, c);
    model_build(mf, c);
    random_params(md, 9);
    for (size_t i = 0; i < md.params_mem.size(); i++) mf.params_mem[i] = (float)md.params_mem[i];
    for (size_t i = 0; i < md.params_mem.size(); i++) md.params_mem[i] = (double)mf.params_mem[i];  // identical weights
    double ld = model_forward(md, ids.data(), targets.data(), B, T);
    float lf = model_forward(mf, ids.data(), targets.data(), B, T);
    model_zero_grad(md);
    model_backward(md);
    model_zero_grad(mf);
    model_backward(mf);
    // float carries ~7 digits; errors grow with depth and sum lengths (T ~ 1000 in attention)
    const double eps = FLT_EPSILON, tol_loss = 64 * eps, tol_logit = 256 * eps, tol_grad = 1024 * eps;
    double lrel = std::fabs(lf - ld) / std::fabs(ld);
    double lmax = 0, lscale = 0;
    for (size_t i = 0; i < (size_t)B * T * c.vocab_size; i++) {
        lmax = std::max(lmax, std::fabs((double)mf.acts.logits[i] - md.acts.logits[i]));
        lscale = std::max(lscale, std::fabs(md.acts.logits[i]));
    }
    printf("loss double %.9f float %.9f rel diff %.2e (tol %.1e); logits max abs diff %.2e of max %.2f (tol %.1e rel)\n", ld,
           (double)lf, lrel, tol_loss, lmax, lscale, tol_logit);
    expect(lrel < tol_loss, "float loss matches double");
    expect(lmax < tol_logit * lscale, "float logits match double");
    printf("%-32s %14s\n", "tensor", "max|gf-gd|/max|gd|");
    double worst = 0;
    for (const TensorSpec &t : md.tensors.specs) {
        double gmax = 0, dmax = 0;
        for (size_t i = 0; i < t.numel; i++) {
            gmax = std::max(gmax, std::fabs(md.grads_mem[t.offset + i]));
            dmax = std::max(dmax, std::fabs((double)mf.grads_mem[t.offset + i] - md.grads_mem[t.offset + i]));
        }
        double rel = dmax / std::max(gmax, 1e-30);
        worst = std::max(worst, rel);
        if (!(rel < tol_grad)) {
            printf("%-32s %14.3e  FAIL\n", t.name.c_str(), rel);
            g_failures++;
        }
    }
    printf("all %zu gradient tensors: worst %.3e (tol %.1e)\n\n", md.tensors.specs.size(), worst, tol_grad);
}

// ----------------------------------------------------------------------------
// 4. init

static void check_init() {
    printf("== model_init\n");
    // dims >= 64 everywhere: orthogonal matrices
    Config c;
    config_defaults(c);
    c.vocab_size = 96; c.num_layers = 3; c.model_dim = 128; c.num_heads = 2; c.num_kv_heads = 1;
    c.mlp_mult = 2; c.bigram_vocab_size = 100; c.bigram_dim = 64; c.ve_enabled = 1; c.ve_dim = 96; c.ve_layers = "2";
    config_derive(c);
    ModelCPU<double> m;
    model_build(m, c);
    model_init(m.params, c, 1337);
    // W (rows, cols) * gain: rows orthonormal when rows <= cols, else columns
    auto ortho_err = [](const double *w, int rows, int cols, double gain) {
        bool by_rows = rows <= cols;
        int nv = by_rows ? rows : cols, len = by_rows ? cols : rows;
        double err = 0;
        for (int a = 0; a < nv; a++)
            for (int b = 0; b < nv; b++) {
                double s = 0;
                for (int i = 0; i < len; i++)
                    s += by_rows ? w[(size_t)a * cols + i] * w[(size_t)b * cols + i] : w[(size_t)i * cols + a] * w[(size_t)i * cols + b];
                err = std::max(err, std::fabs(s - (a == b ? gain * gain : 0.0)));
            }
        return err;
    };
    const double pg = 1.0 / std::sqrt(2.0 * c.num_layers);
    const int D = c.model_dim, KVD = c.kv_dim, F = c.mlp_hidden;
    struct { const char *name; const double *w; int rows, cols; double gain; } mats[] = {
        {"blocks.0.attn.c_q (D, D)", m.params.blocks[0].c_q, D, D, 1},
        {"blocks.1.attn.c_k (KVD, D)", m.params.blocks[1].c_k, KVD, D, 1},
        {"blocks.2.attn.c_v (KVD, D)", m.params.blocks[2].c_v, KVD, D, 1},
        {"blocks.0.mlp.fc (F, D)", m.params.blocks[0].fc, F, D, 1},
        {"bigram.proj (D, 64) / sqrt(2L)", m.params.bigram_proj, D, (int)c.bigram_dim, pg},
        {"ve_shared.proj (KVD, 96) / sqrt(2L)", m.params.ve_proj, KVD, (int)c.ve_dim, pg},
    };
    for (auto &mt : mats) {
        double e = ortho_err(mt.w, mt.rows, mt.cols, mt.gain);
        printf("orthogonal %-38s max |W W^T - g^2 I| = %.2e\n", mt.name, e);
        // model_init rounds every initial value to bf16 (as the reference's .bfloat16() does):
        // each element moves by at most 2^-9 relative, so a dot product of two unit rows moves
        // by at most ~2 * 2^-9 = 4e-3; allow 1e-2 and check the bf16 rounding itself below.
        expect(e < 1e-2 * mt.gain * mt.gain, mt.name);
        bool representable = true;
        for (size_t i = 0; i < (size_t)mt.rows * mt.cols; i++)
            representable = representable && (double)bf16_to_f32(f32_to_bf16((float)mt.w[i])) == mt.w[i];
        expect(representable, "init values are bf16-representable");
    }
    auto all_equal = [](const double *w, size_t n, double v) { for (size_t i = 0; i < n; i++) if (w[i] != v) return false; return true; };
    expect(all_equal(m.params.blocks[1].attn_proj, (size_t)D * D, 0), "attn.proj is zero");
    expect(all_equal(m.params.blocks[1].mlp_proj, (size_t)D * F, 0), "mlp.proj is zero");
    expect(all_equal(m.params.bigram_embed, (size_t)c.bigram_vocab_size * c.bigram_dim, 0), "bigram.embed is zero");
    expect(all_equal(m.params.smear_gate, D, 0), "smear gate is zero");
    // 0.05 and 0.1 through bf16, as the reference's init leaves them
    expect(*m.params.bigram_scale == 0.050048828125 && *m.params.ve_scale == 0.10009765625 && *m.params.ve_layer_scales[0] == 1,
           "bigram/VE scales");
    expect(all_equal(m.params.blocks[2].q_gain, c.num_heads, 1.5), "q_gain = QK_GAIN_INIT");
    expect(all_equal(m.params.blocks[2].resid_mix, D, 1) && all_equal(m.params.blocks[2].resid_mix + D, D, 0), "resid_mix = (1, 0)");
    expect(all_equal(m.params.skip_weights, (size_t)c.num_skip * D, 1), "skip weights 1");
    auto moments = [](const double *w, size_t n, double &mean, double &std) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < n; i++) { s += w[i]; s2 += w[i] * w[i]; }
        mean = s / n;
        std = std::sqrt(s2 / n - mean * mean);
    };
    double mean, std;
    moments(m.params.tok_emb, (size_t)c.vocab_size * D, mean, std);
    printf("tok_emb mean %.2e std %.5f (want 0, %.3f)\n", mean, std, c.tied_embed_init_std);
    expect(std::fabs(std / c.tied_embed_init_std - 1) < 0.03 && std::fabs(mean) < 3e-4, "tok_emb ~ N(0, TIED_EMBED_INIT_STD)");
    moments(m.params.ve_embed, (size_t)c.vocab_size * c.ve_dim, mean, std);
    printf("ve_shared.embed mean %.2e std %.5f (want 0, 0.01)\n", mean, std);
    expect(std::fabs(std / 0.01 - 1) < 0.03 && std::fabs(mean) < 5e-4, "ve_shared.embed ~ N(0, 0.01)");
    // same seed, same weights; another seed, other weights
    ModelCPU<double> m2;
    model_build(m2, c);
    model_init(m2.params, c, 1337);
    expect(m2.params_mem == m.params_mem, "model_init is deterministic for a seed");
    model_init(m2.params, c, 1338);
    expect(m2.params_mem != m.params_mem, "another seed gives other weights");

    // small dims (< 64): the modules' own init survives: nn.Linear's U(+-1/sqrt(in)) for c_q,
    // c_k, c_v, fc; zero for bigram.proj and ve_shared.proj
    Config t = tiny_config();
    ModelCPU<double> mt;
    model_build(mt, t);
    model_init(mt.params, t, 1);
    double bound = 1.0 / std::sqrt((double)t.model_dim), amax = 0;
    for (int i = 0; i < t.model_dim * t.model_dim; i++) amax = std::max(amax, std::fabs(mt.params.blocks[0].c_q[i]));
    printf("small dims: c_q max |w| %.4f (bound 1/sqrt(D) = %.4f)\n", amax, bound);
    expect(amax <= bound && amax > 0.8 * bound, "small c_q ~ U(-1/sqrt(in), 1/sqrt(in))");
    expect(all_equal(mt.params.bigram_proj, (size_t)t.model_dim * t.bigram_dim, 0), "small bigram.proj stays zero");
    expect(all_equal(mt.params.ve_proj, (size_t)t.kv_dim * t.ve_dim, 0), "small ve_shared.proj stays zero");
    printf("%s\n\n", "init: checked");
}

// ----------------------------------------------------------------------------
// bench: float forward/backward speed on a small config (what a short CPU training run uses)

static void bench() {
    Config c;
    config_defaults(c);
    c.vocab_size = 1024; c.num_layers = 2; c.model_dim = 128; c.num_heads = 4; c.num_kv_heads = 2;
    c.bigram_vocab_size = 2048; c.bigram_dim = 64; c.xsa_last_n = 1; c.ve_enabled = 1; c.ve_dim = 32; c.ve_layers = "1";
    config_derive(c);
    const int B = 4, T = 256;
    ModelCPU<float> m;
    model_build(m, c);
    random_params(m, 1);
    std::vector<int> ids, targets;
    random_tokens(ids, targets, B * T, c.vocab_size, 2);
    model_forward(m, ids.data(), targets.data(), B, T);  // warm up (allocations)
    model_backward(m);
    const int reps = 5;
    double tf = 0, tb = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        model_forward(m, ids.data(), targets.data(), B, T);
        double t1 = now_seconds();
        model_zero_grad(m);
        model_backward(m);
        double t2 = now_seconds();
        tf += t1 - t0;
        tb += t2 - t1;
    }
    printf("bench float: L=%ld D=%ld H=%ld KV=%ld F=%d V=%ld B=%d T=%d (%zu params): forward %.1f ms, backward %.1f ms, "
           "%.0f tokens/s\n",
           c.num_layers, c.model_dim, c.num_heads, c.num_kv_heads, c.mlp_hidden, c.vocab_size, B, T, m.tensors.count,
           1e3 * tf / reps, 1e3 * tb / reps, B * T * reps / (tf + tb));
}

int main(int argc, char **argv) {
    bool quick = false;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--quick")) quick = true;
        else if (!strcmp(argv[a], "--bench")) { bench(); return 0; }
        else fatal_config("gradcheck: unknown argument '%s' (use --quick or --bench)", argv[a]);
    }
    double t0 = now_seconds();
    check_init();
    double t1 = now_seconds();
    check_qat();
    double t2 = now_seconds();
    check_float_vs_double();
    double t3 = now_seconds();
    check_gradients(quick ? 3 : 20);
    double t4 = now_seconds();
    printf("time: init %.1f s, QAT %.1f s, float vs double %.1f s, finite differences %.1f s\n", t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    if (g_failures) {
        printf("gradcheck: %d FAILED\n", g_failures);
        return 1;
    }
    printf("gradcheck: all ok\n");
    return 0;
}
