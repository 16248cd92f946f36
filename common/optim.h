// optim.h: the optimizer side of training, on the CPU: schedules as pure functions of the step
// and the clock, Muon (Newton-Schulz orthogonalization), AdamW, global-norm clipping and the EMA.
// The GPU launchers (optim.cuh, later) are twins of these and are checked against them.
//
// Where the CPU path differs from the reference on purpose:
//   - Newton-Schulz runs in fp32 here; the reference runs it in bf16 (the GPU path will too).
//   - Master weights are fp32 for every tensor; the reference keeps the embedding tables
//     (tok_emb, bigram.embed, ve_shared.embed) and their Adam moments in bf16.
#pragma once

#include <cmath>
#include <vector>

#include "config.h"
#include "tensors.h"

// ----------------------------------------------------------------------------
// schedules: pure functions of (step, elapsed training time)

// LR multiplier. With a wallclock cap the warmdown is time-based: it starts once the remaining
// time is less than WARMDOWN_ITERS average steps, and ends at 0 at the cap. Without a cap it is
// linear to 0 over the last WARMDOWN_ITERS iterations.
inline double lr_multiplier(const Config &c, long step, double elapsed_ms) {
    if (c.warmdown_iters <= 0) return 1.0;
    if (c.max_wallclock_seconds <= 0) {
        long start = std::max(c.iterations - c.warmdown_iters, 0L);
        if (step >= start && step < c.iterations)
            return std::max((double)(c.iterations - step) / (double)std::max(c.warmdown_iters, 1L), 0.0);
        return 1.0;
    }
    double step_ms = elapsed_ms / (double)std::max(step, 1L);
    double warmdown_ms = (double)c.warmdown_iters * step_ms;
    double remaining_ms = std::max(1000.0 * c.max_wallclock_seconds - elapsed_ms, 0.0);
    return remaining_ms <= warmdown_ms ? remaining_ms / std::max(warmdown_ms, 1e-9) : 1.0;
}

// Muon momentum: linear ramp from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM.
inline double muon_momentum_at(const Config &c, long step) {
    double frac = c.muon_momentum_warmup_steps > 0 ? std::min((double)step / (double)c.muon_momentum_warmup_steps, 1.0) : 1.0;
    return (1.0 - frac) * c.muon_momentum_warmup_start + frac * c.muon_momentum;
}

// Base learning rate of each optimizer group.
inline double group_lr(const Config &c, OptGroup g) {
    return g == OPT_MUON ? c.matrix_lr : g == OPT_ADAM_EMBED ? c.tied_embed_lr : c.scalar_lr;
}

// ----------------------------------------------------------------------------
// Newton-Schulz orthogonalization (Muon's "zeropower"), fp32 on the CPU.

// out (M, N) = a (M, K) @ b (N, K)^T when bT, else a (M, K) @ b (K, N). Plain loops in an order
// that walks memory contiguously (CPU sizes are tiny); fp32 accumulation like the GPU's.
inline void ns_matmul(float *out, const float *a, const float *b, int M, int K, int N, bool bT) {
#pragma omp parallel for
    for (int i = 0; i < M; i++) {
        float *o = out + (size_t)i * N;
        const float *ai = a + (size_t)i * K;
        if (bT) {
            for (int j = 0; j < N; j++) {
                const float *bj = b + (size_t)j * K;
                float s = 0;
                for (int k = 0; k < K; k++) s += ai[k] * bj[k];
                o[j] = s;
            }
        } else {
            for (int j = 0; j < N; j++) o[j] = 0;
            for (int k = 0; k < K; k++) {
                const float aik = ai[k], *bk = b + (size_t)k * N;
                for (int j = 0; j < N; j++) o[j] += aik * bk[j];
            }
        }
    }
}

// G (rows, cols) -> approximately the orthogonal factor U V^T of its SVD, in place.
inline void newton_schulz_cpu(float *G, int rows, int cols, int steps) {
    const float a = 3.4445f, b = -4.7750f, c = 2.0315f;
    bool tr = rows > cols;  // work on the wide orientation so X X^T is the small Gram matrix
    int m = tr ? cols : rows, n = tr ? rows : cols;
    std::vector<float> X((size_t)m * n), A((size_t)m * m), B((size_t)m * m), Y((size_t)m * n);
    double norm = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) norm += (double)G[i] * G[i];
    float inv = (float)(1.0 / (std::sqrt(norm) + 1e-7));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float v = G[(size_t)i * cols + j] * inv;
            if (tr) X[(size_t)j * n + i] = v; else X[(size_t)i * n + j] = v;
        }
    for (int it = 0; it < steps; it++) {
        ns_matmul(A.data(), X.data(), X.data(), m, n, m, true);   // A = X X^T
        ns_matmul(B.data(), A.data(), A.data(), m, m, m, false);  // B = A A
        for (size_t i = 0; i < B.size(); i++) B[i] = b * A[i] + c * B[i];  // B = bA + cA^2
        ns_matmul(Y.data(), B.data(), X.data(), m, m, n, false);  // Y = B X
        for (size_t i = 0; i < X.size(); i++) X[i] = a * X[i] + Y[i];
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) G[(size_t)i * cols + j] = tr ? X[(size_t)j * n + i] : X[(size_t)i * n + j];
}

// ----------------------------------------------------------------------------
// optimizer state and one step

struct OptimState {
    std::vector<float> muon_buf;    // (n_params) Muon momentum buffer (Muon tensors only used)
    std::vector<float> adam_m;      // (n_params) AdamW first moment (Adam tensors only used)
    std::vector<float> adam_v;      // (n_params) AdamW second moment
    long adam_t = 0;                // AdamW step count (all Adam tensors step together)
    void init(size_t n) { muon_buf.assign(n, 0.f); adam_m.assign(n, 0.f); adam_v.assign(n, 0.f); adam_t = 0; }
};

// Global L2 norm of all gradients (clip_grad_norm_'s total norm).
inline double grad_global_norm(const float *grads, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)grads[i] * grads[i];
    return std::sqrt(s);
}

// Scale gradients so their global norm is at most max_norm, as torch's clip_grad_norm_:
// coef = max_norm / (norm + 1e-6), applied only when it is below 1. Returns the norm.
inline double clip_grad_norm_cpu(float *grads, size_t n, double max_norm) {
    double norm = grad_global_norm(grads, n);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) for (size_t i = 0; i < n; i++) grads[i] = (float)(grads[i] * coef);
    }
    return norm;
}

// One optimizer step over every tensor of the list: Muon for OPT_MUON tensors, AdamW for the
// others, at base LR x lr_mult. `grads` is consumed (Muon overwrites it with its update).
inline void optimizer_step_cpu(const Config &c, const TensorList &tl, float *params, float *grads, OptimState &st,
                               double lr_mult, double muon_mu) {
    st.adam_t++;
    const double b1 = c.beta1, b2 = c.beta2;
    const double bc1 = 1.0 - std::pow(b1, (double)st.adam_t), bc2 = 1.0 - std::pow(b2, (double)st.adam_t);
    for (const TensorSpec &s : tl.specs) {
        float *p = params + s.offset, *g = grads + s.offset;
        double lr = group_lr(c, s.group) * lr_mult;
        if (s.group == OPT_MUON) {
            check_internal(s.shape.size() == 2);
            int rows = (int)s.shape[0], cols = (int)s.shape[1];
            float *buf = st.muon_buf.data() + s.offset;
            for (size_t i = 0; i < s.numel; i++) {
                buf[i] = (float)(muon_mu * buf[i] + g[i]);
                g[i] = (float)(g[i] + muon_mu * buf[i]);  // nesterov
            }
            newton_schulz_cpu(g, rows, cols, (int)c.muon_backend_steps);
            double scale = std::sqrt(std::max(1.0, (double)rows / cols));
            double decay = 1.0 - lr * c.muon_wd;
#ifdef BREAK_MUON_WD_CPU  // a deliberately wrong variant (test_parity.sh must catch it): no weight decay
            decay = 1.0;
#endif
            for (size_t i = 0; i < s.numel; i++) p[i] = (float)(p[i] * decay - lr * (g[i] * scale));
        } else {
            // torch.optim.AdamW: decoupled decay, then the bias-corrected Adam update
            float *m = st.adam_m.data() + s.offset, *v = st.adam_v.data() + s.offset;
            double decay = 1.0 - lr * c.adam_wd, step_size = lr / bc1, sqrt_bc2 = std::sqrt(bc2);
            for (size_t i = 0; i < s.numel; i++) {
                m[i] = (float)(b1 * m[i] + (1.0 - b1) * g[i]);
                v[i] = (float)(b2 * v[i] + (1.0 - b2) * (double)g[i] * g[i]);
                double denom = std::sqrt((double)v[i]) / sqrt_bc2 + c.adam_eps;
                p[i] = (float)(p[i] * decay - step_size * m[i] / denom);
            }
        }
    }
}

// The EMA decay of the update after step t (t = 0 for the first step after the EMA reset that
// follows the warmup; t is the training step, so a resume restores it from STATE_STEP). The
// reference's decay is constant; EMA_WARMUP=1 ramps it as min(EMA_DECAY, (1+t)/(10+t)): 0.1,
// 0.18, 0.25, ... reaching 0.997 at t = 2990, so the average of a short run forgets its first
// (random) weights instead of carrying ~0.997^t of them to the end.
inline double ema_decay_at(const Config &c, long t) {
    if (!c.ema_warmup) return c.ema_decay;
    return std::min(c.ema_decay, (1.0 + (double)t) / (10.0 + (double)t));
}

// EMA of the weights: e = decay * e + (1 - decay) * p, every step from step 0, with decay =
// ema_decay_at(step).
inline void ema_update_cpu(float *ema, const float *params, size_t n, double decay) {
    for (size_t i = 0; i < n; i++) ema[i] = (float)(decay * ema[i] + (1.0 - decay) * params[i]);
}
