// dev/loss.cu: check and benchmark of the fused softcapped cross-entropy (common/loss.cuh)
// against its CPU twins (softcap_forward_cpu + crossentropy_forward_cpu for the losses,
// crossentropy_backward_cpu + softcap_backward_cpu for the gradient, common/model_cpu.h).
//
// Version 0 is the shipping launcher crossentropy_softcap_fused (vector path when V % 8 == 0,
// scalar path otherwise). At several shapes (V = 1024, V = 1000 and 3 (scalar path), V = 520 (a
// partial last chunk), V = 2056 and 4104 (beyond the register cache), N = 1 and 333), random raw
// logits (std 20, so many are squashed by the cap of 30) are rounded to bf16 and given to both
// sides; the CPU runs in float on the same values:
//   losses (fp32): rtol 1e-4, atol 1e-4; gradient (bf16, in place): rtol 1e-2, atol 1e-3 * max|ref|.
// Also: the eval mode (no backward) leaves the logits untouched; a bad target gives NaN; the
// round_bf16 mode (z rounded to bf16 like the reference) against a CPU that rounds too, at the
// unrounded mode's tolerances plus, per element, the effect of the few logits that lie within
// 1e-5 of a bf16 rounding midpoint (the two sides may round those differently: see test_loss);
// loss_sum against a double sum. Then benchmark rows at the seed shape (N = 98304, V = 1024).
//
//   make build/dev_loss && ./build/dev_loss       exit status 0 = every check passed
//   ./build/dev_loss --no-bench                    checks only
#include <cstring>
#include <numeric>

#include "check.cuh"
#include "../common/loss.cuh"
#include "../common/model_cpu.h"


// the CPU reference: losses and d loss / d raw, from bf16-rounded raw logits
static void reference(std::vector<float> &losses, std::vector<float> &draw, const std::vector<float> &raw,
                      const std::vector<int> &targets, int N, int V, float cap, float dloss, bool round_bf16) {
    std::vector<float> z((size_t)N * V);
    softcap_forward_cpu(z.data(), raw.data(), cap, z.size());
    if (round_bf16)
        for (float &v : z) v = rbf(v);
    losses.assign(N, 0.f);
    crossentropy_forward_cpu(losses.data(), z.data(), targets.data(), N, V);
    draw.assign((size_t)N * V, 0.f);
    crossentropy_backward_cpu(draw.data(), z.data(), targets.data(), dloss, N, V);
    softcap_backward_cpu(draw.data(), z.data(), cap, draw.size());
}

static void test_loss(int N, int V, float cap, bool round_bf16, float std = 20.f) {
    printf("crossentropy_softcap_fused N=%d V=%d cap=%g round_bf16=%d std=%g\n", N, V, cap, round_bf16, std);
    std::vector<float> raw((size_t)N * V);
    fill_normal(raw, std);
    for (float &v : raw) v = rbf(v);
    std::vector<int> targets(N);
    fill_uniform_int(targets, 0, V);
    const float dloss = 1.f / (8.f * N);  // 1/N times a grad-accumulation scale of 1/8
    std::vector<float> r_loss, r_draw;
    reference(r_loss, r_draw, raw, targets, N, V, cap, dloss, round_bf16);

    bf16 *d_logits;
    float *d_loss;
    int *d_tgt;
    cudaCheck(cudaMalloc(&d_logits, raw.size() * sizeof(bf16)));
    cudaCheck(cudaMalloc(&d_loss, N * sizeof(float)));
    cudaCheck(cudaMalloc(&d_tgt, N * sizeof(int)));
    cudaCheck(cudaMemcpy(d_tgt, targets.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    std::vector<float> g_loss(N), g_draw(raw.size());
    // without round_bf16 the two sides agree to fp32 rounding; with it, a z that lies on a bf16
    // rounding boundary may round differently, by one step (0.0625 for |z| in [8, 16)): a few
    // percent on that logit's probability. (The round_bf16 tests keep |z| mostly below 16: near
    // the cap one step also changes the tanh' factor 1 - (z/cap)^2 by a lot, relatively.)
    //
    // So in round_bf16 mode each element gets its own bound instead of one loose tolerance. The
    // GPU's softcap differs from the CPU's tanh by at most a few 1e-6 absolute (loss.cuh), so
    // only a z within ZB = 1e-5 of a bf16 rounding midpoint can round the other way, by one
    // step h_i (bf16 spacing at |z_i|). With b_i = 1 for such "borderline" logits:
    //   loss:  |dloss_n| <= 1e-4 + sum_i b_i h_i (p_i + [i = target])       (d lse / d z_i = p_i)
    //   grad:  d raw_i = dl (p_i - [i=t]) (1 - (z_i/cap)^2); a step on z_j moves p_i by
    //          p_i (h_j b_j [i=j] - p_j h_j b_j), so
    //          |d grad_i| <= dl (p_i (h_i b_i + S) + |p_i - [i=t]| 2 |z_i| h_i b_i / cap^2) + bf16
    //          output rounding (rtol 1e-2) + 1e-3 max|ref|, with S = sum_j p_j h_j b_j.
    // Everything else must agree to fp32 rounding like the unrounded mode: a kernel that skips
    // or misplaces the rounding is off by ~h/2 * p per logit on EVERY row and fails.
    const double loss_atol = 1e-4, grad_rtol = 1e-2;
    std::vector<double> loss_bound(N, loss_atol), grad_bound(raw.size(), 0.0);
    int borderline = 0;
    if (round_bf16) {
        std::vector<float> zf(raw.size());
        softcap_forward_cpu(zf.data(), raw.data(), cap, zf.size());
        const double ZB = 1e-5, dl = dloss;
        for (int n = 0; n < N; n++) {
            const float *z = zf.data() + (size_t)n * V;
            std::vector<double> p(V), h(V), b(V);
            double m = -INFINITY, sum = 0, S = 0;
            for (int i = 0; i < V; i++) m = std::max(m, (double)rbf(z[i]));
            for (int i = 0; i < V; i++) sum += std::exp((double)rbf(z[i]) - m);
            for (int i = 0; i < V; i++) {
                p[i] = std::exp((double)rbf(z[i]) - m) / sum;
                // the bf16 spacing at z (8 significant bits) and the distance to the midpoint
                const double az = std::max(std::fabs((double)z[i]), 1e-30);
                h[i] = std::ldexp(1.0, (int)std::floor(std::log2(az)) - 7);
                const double frac = std::fmod(az, h[i]) / h[i];
                b[i] = std::fabs(frac - 0.5) * h[i] <= ZB ? 1.0 : 0.0;
                borderline += (int)b[i];
                S += p[i] * h[i] * b[i];
                loss_bound[n] += b[i] * h[i] * (p[i] + (i == targets[n] ? 1.0 : 0.0));
            }
            for (int i = 0; i < V; i++) {
                const double onehot = i == targets[n] ? 1.0 : 0.0;
                grad_bound[(size_t)n * V + i] =
                    dl * (p[i] * (h[i] * b[i] + S) + std::fabs(p[i] - onehot) * 2 * std::fabs(z[i]) * h[i] * b[i] / (cap * cap));
            }
        }
        printf("  info %d borderline logits (within %.0e of a bf16 midpoint) of %zu\n", borderline, ZB, raw.size());
    }
    // per-element check against the bounds (NaN fails); prints the worst ratio error / bound
    auto check_bounded = [&](const char *name, const std::vector<float> &got, const std::vector<float> &ref,
                             const std::vector<double> &extra, double rtol, double atol) {
        double worst = 0, worst_err = 0;
        size_t bad = 0;
        for (size_t i = 0; i < ref.size(); i++) {
            const double e = std::fabs((double)got[i] - ref[i]), bound = atol + rtol * std::fabs(ref[i]) + extra[i];
            if (!std::isfinite(got[i]) || e > bound) bad++;
            worst = std::max(worst, std::isfinite(got[i]) ? e / bound : INFINITY);
            worst_err = std::max(worst_err, e);
        }
        printf("  %s %-28s max err %.3g, worst err/bound %.3f%s\n", bad ? "FAIL" : "ok  ", name, worst_err, worst,
               bad ? " (mismatches)" : "");
        printf("observed: loss_round_bf16 %s %.3e\n", name, worst_err);
        return bad == 0;
    };

    // eval mode: losses only, the logits stay
    to_device_bf16(d_logits, raw.data(), raw.size());
    poison(d_loss, N);
    crossentropy_softcap_fused(d_logits, d_loss, d_tgt, N, V, cap, dloss, false, round_bf16, 0);
    cudaCheck(cudaMemcpy(g_loss.data(), d_loss, N * sizeof(float), cudaMemcpyDeviceToHost));
    if (round_bf16) expect(check_bounded("losses (no backward)", g_loss, r_loss, loss_bound, 1e-4, 0));
    else expect(validate("losses (no backward)", g_loss.data(), r_loss.data(), N, 1e-4, loss_atol));
    from_device_bf16(g_draw.data(), d_logits, raw.size());
    const bool same = memcmp(g_draw.data(), raw.data(), raw.size() * sizeof(float)) == 0;
    printf("  %s %-28s\n", same ? "ok  " : "FAIL", "logits untouched");
    expect(same);

    // training: losses and the gradient in place
    poison(d_loss, N);
    crossentropy_softcap_fused(d_logits, d_loss, d_tgt, N, V, cap, dloss, true, round_bf16, 0);
    cudaCheck(cudaMemcpy(g_loss.data(), d_loss, N * sizeof(float), cudaMemcpyDeviceToHost));
    from_device_bf16(g_draw.data(), d_logits, raw.size());
    double mx = 0;
    for (float v : r_draw) mx = std::max(mx, (double)std::fabs(v));
    if (round_bf16) {
        expect(check_bounded("losses", g_loss, r_loss, loss_bound, 1e-4, 0));
        expect(check_bounded("dlogits (in place)", g_draw, r_draw, grad_bound, grad_rtol, 1e-3 * mx));
    } else {
        expect(validate("losses", g_loss.data(), r_loss.data(), N, 1e-4, loss_atol));
        expect(validate("dlogits (in place)", g_draw.data(), r_draw.data(), r_draw.size(), grad_rtol, 1e-3 * mx));
    }
    if (round_bf16) {  // and the mean loss: the borderline cases are rare
        double a = 0, b = 0;
        for (int n = 0; n < N; n++) {
            a += g_loss[n];
            b += r_loss[n];
        }
        const bool ok = std::fabs(a - b) / N <= 1e-4 + std::accumulate(loss_bound.begin(), loss_bound.end(), 0.0) / N;
        printf("  %s %-28s got %.6f ref %.6f\n", ok ? "ok  " : "FAIL", "mean loss", a / N, b / N);
        expect(ok);
    }

    // loss_sum: mean of the losses, then accumulated once more
    float *d_sum;
    cudaCheck(cudaMalloc(&d_sum, sizeof(float)));
    loss_sum(d_sum, d_loss, N, 1.f / N, false, 0);
    loss_sum(d_sum, d_loss, N, 1.f / N, true, 0);
    float got_sum;
    cudaCheck(cudaMemcpy(&got_sum, d_sum, sizeof(float), cudaMemcpyDeviceToHost));
    double ref_sum = 0;
    for (float v : g_loss) ref_sum += v;
    const float ref2 = (float)(2 * ref_sum / N);
    expect(validate("loss_sum (x2)", &got_sum, &ref2, 1, 1e-5, 0));
    cudaFreeCheck(d_sum);
    cudaFreeCheck(d_logits);
    cudaFreeCheck(d_loss);
    cudaFreeCheck(d_tgt);
}

// a target outside [0, V) gives a NaN loss and a NaN gradient row; the other rows are fine
static void test_bad_target(int V) {
    printf("crossentropy_softcap_fused bad targets V=%d\n", V);
    const int N = 4;
    std::vector<float> raw((size_t)N * V);
    fill_normal(raw, 5.f);
    std::vector<int> targets = {0, -1, V, V - 1};
    DevBuf<bf16> d_logits(raw.size());
    DevBuf<float> d_loss(N);
    DevBuf<int> d_tgt(N);
    cudaCheck(cudaMemcpy(d_tgt.p, targets.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    to_device_bf16(d_logits.p, raw.data(), raw.size());
    crossentropy_softcap_fused(d_logits.p, d_loss.p, d_tgt.p, N, V, 30.f, 0.25f, true, false, 0);
    std::vector<float> loss(N), g((size_t)N * V);
    cudaCheck(cudaMemcpy(loss.data(), d_loss.p, N * sizeof(float), cudaMemcpyDeviceToHost));
    from_device_bf16(g.data(), d_logits.p, g.size());
    bool ok = std::isfinite(loss[0]) && std::isnan(loss[1]) && std::isnan(loss[2]) && std::isfinite(loss[3]);
    for (int i = 0; i < V; i++)
        ok = ok && std::isfinite(g[i]) && std::isnan(g[(size_t)V + i]) && std::isnan(g[(size_t)2 * V + i]) &&
             std::isfinite(g[(size_t)3 * V + i]);
    printf("  %s %-28s\n", ok ? "ok  " : "FAIL", "NaN exactly on bad rows");
    expect(ok);
}

static void bench_all() {
    const int N = 98304, V = 1024;
    printf("\nbenchmarks (seed shape N=%d V=%d)\n", N, V);
    bf16 *d_logits;
    float *d_loss, *d_sum;
    int *d_tgt;
    cudaCheck(cudaMalloc(&d_logits, (size_t)N * V * sizeof(bf16)));
    cudaCheck(cudaMalloc(&d_loss, N * sizeof(float)));
    cudaCheck(cudaMalloc(&d_sum, sizeof(float)));
    cudaCheck(cudaMalloc(&d_tgt, N * sizeof(int)));
    {
        std::vector<float> raw((size_t)N * V);
        fill_normal(raw, 3.f);
        to_device_bf16(d_logits, raw.data(), raw.size());
        std::vector<int> t(N);
        fill_uniform_int(t, 0, V);
        cudaCheck(cudaMemcpy(d_tgt, t.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    }
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d V=%d", N, V);
    const double row_bytes = (double)N * V * 2;
    // eval first (it leaves the logits as they are), then training (in place, repeatedly: the
    // later runs see gradients as logits, the same work)
    bench_row("ce_softcap (eval)", shape,
              bench_ms([&] { crossentropy_softcap_fused(d_logits, d_loss, d_tgt, N, V, 30.f, 1.f / N, false, false, 0); }),
              row_bytes + N * 8.0, 0);
    bench_row("ce_softcap (fwd+bwd)", shape,
              bench_ms([&] { crossentropy_softcap_fused(d_logits, d_loss, d_tgt, N, V, 30.f, 1.f / N, true, false, 0); }),
              2 * row_bytes + N * 8.0, 0);
    bench_row("ce_softcap (fwd+bwd, round)", shape,
              bench_ms([&] { crossentropy_softcap_fused(d_logits, d_loss, d_tgt, N, V, 30.f, 1.f / N, true, true, 0); }),
              2 * row_bytes + N * 8.0, 0);
    bench_row("loss_sum", shape, bench_ms([&] { loss_sum(d_sum, d_loss, N, 1.f / N, false, 0); }), N * 4.0, 0);
    cudaFreeCheck(d_logits);
    cudaFreeCheck(d_loss);
    cudaFreeCheck(d_sum);
    cudaFreeCheck(d_tgt);
}

int main(int argc, char **argv) {
    const bool bench = check_args(argc, argv, "dev_loss");
    DeviceInfo dev = device_info();
    printf("dev_loss on %s (%d SMs, sm_%d%d)\n", dev.name, dev.sm_count, dev.cc_major, dev.cc_minor);

    test_loss(1, 1024, 30.f, false);
    test_loss(333, 1024, 30.f, false);
    test_loss(64, 520, 30.f, false);    // the last 8-vector chunk is partial
    test_loss(9, 2056, 30.f, false);    // beyond the register cache
    test_loss(17, 4104, 30.f, false);
    test_loss(7, 1000, 30.f, false);    // V % 8 != 0: the scalar path
    test_loss(5, 3, 30.f, false);
    test_loss(5, 8, 15.f, false);
    test_loss(333, 1024, 30.f, true, 4.f);  // z rounded to bf16, as the reference does
    test_loss(7, 1000, 30.f, true, 4.f);
    test_bad_target(1024);
    test_bad_target(1000);

    if (check_verdict("dev_loss")) return 1;
    if (bench) bench_all();
    return 0;
}
