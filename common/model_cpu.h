// model_cpu.h: the whole model on the CPU, forward and backward, in plain loops.
//
// This is the "exact math" reference that the GPU kernels are checked against, and the CPU
// training path for tiny configs. Every op of docs/RECIPE.md "The model" is a pair of functions
// <op>_forward_cpu / <op>_backward_cpu, named like its GPU twin, templated on `real` (float for
// the CPU trainer, double for the gradient checks), and written as plain loops over row-major
// arrays. The letters in the shape comments:
//   B sequences, T positions, N = B*T tokens, D model dim, H query heads, KV key/value heads,
//   hd head dim, rd rotated dims (ROPE_DIMS), F MLP hidden, V vocab, L layers.
// Conventions:
//   - a matmul is nn.Linear's: out(N, OC) = inp(N, IC) @ W^T, with W stored (OC, IC);
//   - every backward ACCUMULATES (+=) into the gradients it writes, of inputs and of parameters
//     (as llm.c does), and the caller zeroes them. Shared tensors then just work: tok_emb is
//     both the embedding and the output head, the residual stream fans out to several users.
//     (One exception, said at the function: softcap_backward works in place.)
//   - parallel loops (OpenMP) give each output element to one thread and sum in a fixed order,
//     so results do not depend on the thread count.
//
// The model (see model_forward below):
//   x = rmsnorm(tok_emb[ids] + bigram(ids)); x = smear(x); x0 = x
//   encoder blocks 0..L/2-1 push their outputs; decoder block i first adds
//   skip_weights[i] * (the last pushed output, popped) while any remain
//   block l, s = 1/sqrt(l+1):  x_in = mix[0]*x + mix[1]*x0
//                              x = x_in + attn_scale * attn(rmsnorm(x_in) * s)
//                              x = x + mlp_scale * proj(relu(fc(rmsnorm(x) * s))^2)
//   logits = cap * tanh(rmsnorm(x) @ tok_emb^T / cap); loss = mean cross-entropy
//
// Where the reference's numbers differ from this exact math (it trains under
// torch.autocast(bfloat16) with the three embedding tables stored in bf16):
//   - every nn.Linear (c_q, c_k, c_v, proj, fc, bigram/VE proj) and the tied head run with bf16
//     operands and fp32 accumulation, and return bf16: all activations between ops are bf16;
//   - the logits x @ tok_emb^T come out of the GEMM in bf16, the softcap tanh runs in bf16, and
//     only then are they cast to fp32 for the cross-entropy;
//   - the RoPE cos/sin tables are computed in fp32 and then cast to bf16 (the q dtype);
//   - scalars and control tensors (scales, mix, gains, gate) are cast to bf16 before use;
//   - the QAT fake-quantized weight is cast to bf16 for the GEMM;
//   - tok_emb, bigram.embed and ve_shared.embed are bf16 parameters (their AdamW updates round).
// Here everything is computed in `real`; the GPU path follows the reference's precision.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "model.h"  // defines: RMS_EPS and the other constants, rope_tables_cpu, layer_has_xsa,
                     //          layer_ve_index, visit_linear_weights, QatMode, NllFn

// ----------------------------------------------------------------------------
// embeddings

// h[b,0] = buckets-1; h[b,t] = (36313*ids[b,t] XOR 27191*ids[b,t-1]) mod (buckets-1).
// Computed as torch does it on an int32 tensor: the products wrap around in 32 bits (36313*id
// overflows once id >= 59139), the XOR can then be negative, and torch's % takes the sign of
// the divisor (floor modulo), so the bucket is always in [0, buckets-2]. Bucket buckets-1 is
// only ever the first position of a sequence: the hash never looks across sequences.
inline void bigram_hash_cpu(int *h, const int *ids, int B, int T, int buckets) {
    const int32_t mod = buckets - 1;
    for (int b = 0; b < B; b++) {
        const int *id = ids + (size_t)b * T;
        int *hb = h + (size_t)b * T;
        hb[0] = mod;
        for (int t = 1; t < T; t++) {
            // unsigned multiply = two's-complement wraparound, without signed-overflow UB
            int32_t cur = (int32_t)((uint32_t)BIGRAM_MUL_CUR * (uint32_t)id[t]);
            int32_t prev = (int32_t)((uint32_t)BIGRAM_MUL_PREV * (uint32_t)id[t - 1]);
            int32_t x = cur ^ prev;
            int32_t r = x % mod;  // C truncates toward zero ...
            if (r < 0) r += mod;  // ... torch floors: same sign as the divisor
            hb[t] = r;
        }
    }
}

// out[n,:] = table[ids[n],:]   table (rows, C), out (N, C)
template <typename real>
void embedding_forward_cpu(real *out, const int *ids, const real *table, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, C * sizeof(real));
}
// dtable[ids[n],:] += dout[n,:]   (sequential: two tokens may share a row)
template <typename real>
void embedding_backward_cpu(real *dtable, const real *dout, const int *ids, int N, int C) {
    for (int n = 0; n < N; n++) {
        real *row = dtable + (size_t)ids[n] * C;
        const real *d = dout + (size_t)n * C;
        for (int i = 0; i < C; i++) row[i] += d[i];
    }
}

// The embedding sum: out[n,:] = tok_emb[ids[n],:] + bigram_scale * bg_proj[n,:]
// tok_emb (V, D), bg_proj (N, D) = bigram.proj(bigram.embed[h]), scale a scalar, out (N, D)
template <typename real>
void embed_sum_forward_cpu(real *out, const int *ids, const real *tok_emb, const real *bg_proj,
                         const real *bigram_scale, int N, int D) {
    const real s = *bigram_scale;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        // seek to out[n,:], the token's embedding row and its bigram row
        real *o = out + (size_t)n * D;
        const real *e = tok_emb + (size_t)ids[n] * D;
        const real *g = bg_proj + (size_t)n * D;
        for (int i = 0; i < D; i++) o[i] = e[i] + s * g[i];
    }
}
template <typename real>
void embed_sum_backward_cpu(real *dtok_emb, real *dbg_proj, real *dbigram_scale, const real *dout,
                          const int *ids, const real *bg_proj, const real *bigram_scale, int N, int D) {
    const real s = *bigram_scale;
    real ds = 0;
    for (int n = 0; n < N; n++) {
        const real *d = dout + (size_t)n * D;
        const real *g = bg_proj + (size_t)n * D;
        real *de = dtok_emb + (size_t)ids[n] * D;
        real *dg = dbg_proj + (size_t)n * D;
        for (int i = 0; i < D; i++) {
            de[i] += d[i];
            dg[i] += s * d[i];
            ds += d[i] * g[i];
        }
    }
    *dbigram_scale += ds;
}

// ----------------------------------------------------------------------------
// normalization, gates, residual arithmetic

// out[n,:] = scale * inp[n,:] / sqrt(mean(inp[n,:]^2) + eps); rstd[n] = 1/sqrt(mean + eps).
// No weight. `scale` is the block's 1/sqrt(l+1) (1 for the embedding and the final norm).
// inp, out (N, C), rstd (N)
template <typename real>
void rmsnorm_forward_cpu(real *out, real *rstd, const real *inp, int N, int C, real scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        real *o = out + (size_t)n * C;
        real ss = 0;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        real r = 1 / std::sqrt(ss / C + (real)RMS_EPS);
        rstd[n] = r;
        for (int i = 0; i < C; i++) o[i] = x[i] * r * scale;
    }
}
// With xhat = x * r: dx = scale * r * (dy - xhat * mean(xhat * dy)).
template <typename real>
void rmsnorm_backward_cpu(real *dinp, const real *dout, const real *inp, const real *rstd, int N, int C, real scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        const real *dy = dout + (size_t)n * C;
        real *dx = dinp + (size_t)n * C;
        const real r = rstd[n];
        real dot = 0;  // sum(xhat * dy)
        for (int i = 0; i < C; i++) dot += x[i] * r * dy[i];
        const real m = dot / C;
        for (int i = 0; i < C; i++) dx[i] += scale * r * (dy[i] - x[i] * r * m);
    }
}

// SmearGate: g = sigmoid(gate) per channel; out[b,t] = (1-g)*x[b,t] + g*x[b,t-1], x[b,-1] = 0.
// inp, out (B, T, C), gate (C)
template <typename real>
void smear_forward_cpu(real *out, const real *inp, const real *gate, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            // seek to out[b,t,:]
            const real *x = inp + ((size_t)b * T + t) * C;
            real *o = out + ((size_t)b * T + t) * C;
            for (int i = 0; i < C; i++) {
                real g = 1 / (1 + std::exp(-gate[i]));
                real prev = t > 0 ? x[i - C] : 0;  // never across sequences
                o[i] = (1 - g) * x[i] + g * prev;
            }
        }
    }
}
template <typename real>
void smear_backward_cpu(real *dinp, real *dgate, const real *dout, const real *inp, const real *gate, int B, int T, int C) {
#pragma omp parallel for
    for (int i = 0; i < C; i++) {  // one channel per iteration: dgate[i] has one writer
        real g = 1 / (1 + std::exp(-gate[i]));
        real dg = 0;  // d loss / d g
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                size_t at = ((size_t)b * T + t) * C + i;
                real d = dout[at];
                real prev = t > 0 ? inp[at - C] : 0;
                dinp[at] += (1 - g) * d;
                if (t > 0) dinp[at - C] += g * d;
                dg += d * (prev - inp[at]);
            }
        }
        dgate[i] += dg * g * (1 - g);  // sigmoid'
    }
}

// x_in = mix[0] * x + mix[1] * x0, mix (2, C), x, x0, out (N, C)
template <typename real>
void resid_mix_forward_cpu(real *out, const real *x, const real *x0, const real *mix, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        size_t at = (size_t)n * C;
        for (int i = 0; i < C; i++) out[at + i] = mix[i] * x[at + i] + mix[C + i] * x0[at + i];
    }
}
template <typename real>
void resid_mix_backward_cpu(real *dx, real *dx0, real *dmix, const real *dout, const real *x, const real *x0,
                            const real *mix, int N, int C) {
#pragma omp parallel for
    for (int i = 0; i < C; i++) {
        real d0 = 0, d1 = 0;
        for (int n = 0; n < N; n++) {
            size_t at = (size_t)n * C + i;
            dx[at] += mix[i] * dout[at];
            dx0[at] += mix[C + i] * dout[at];
            d0 += dout[at] * x[at];
            d1 += dout[at] * x0[at];
        }
        dmix[i] += d0;
        dmix[C + i] += d1;
    }
}

// out = x + scale ⊙ y with a per-channel scale: the attn_scale / mlp_scale residual updates and
// the U-Net skip add (scale = skip_weights[i], y = the encoder output). x, y, out (N, C), scale (C)
template <typename real>
void residual_scale_forward_cpu(real *out, const real *x, const real *scale, const real *y, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        size_t at = (size_t)n * C;
        for (int i = 0; i < C; i++) out[at + i] = x[at + i] + scale[i] * y[at + i];
    }
}
// dx may be null when the caller keeps using dout as the gradient of x (it is the same).
template <typename real>
void residual_scale_backward_cpu(real *dx, real *dscale, real *dy, const real *dout, const real *scale,
                                 const real *y, int N, int C) {
#pragma omp parallel for
    for (int i = 0; i < C; i++) {
        real ds = 0;
        for (int n = 0; n < N; n++) {
            size_t at = (size_t)n * C + i;
            if (dx) dx[at] += dout[at];
            dy[at] += scale[i] * dout[at];
            ds += dout[at] * y[at];
        }
        dscale[i] += ds;
    }
}

// The residual scale folded into the projection that feeds it (the GPU backward's form, see
// layers.cuh's fold_scale_*): for out = x + scale ⊙ (a W^T), W (C, K),
//   d a = dout (diag(scale) W) = dout wt^T with wt (K, C) = (diag(scale) W)^T   (fold_scale_transpose_cpu)
//   dW += diag(scale) G, dscale[c] += sum_k G[c, k] W[c, k], G = dout^T a (C, K) (fold_scale_grad_cpu)
// the same gradients as residual_scale_backward_cpu followed by the proj's backward, in exact math.
template <typename real>
void fold_scale_transpose_cpu(real *wt, const real *w, const real *scale, int C, int K) {
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) wt[(size_t)k * C + c] = scale[c] * w[(size_t)c * K + k];
}
template <typename real>
void fold_scale_grad_cpu(real *dw, real *dscale, const real *g, const real *scale, const real *w, int C, int K) {
    for (int c = 0; c < C; c++) {
        real ds = 0;
        for (int k = 0; k < K; k++) {
            dw[(size_t)c * K + k] += scale[c] * g[(size_t)c * K + k];
            ds += g[(size_t)c * K + k] * w[(size_t)c * K + k];
        }
        dscale[c] += ds;
    }
}

// out = s * inp with a scalar s (a 0-dim or 1-element parameter): the value embedding's
// ve_shared.scale, and (with accumulate) v += ve_layer_scales[k] * ve. inp, out (n)
template <typename real>
void scalar_scale_forward_cpu(real *out, const real *inp, const real *s, size_t n, bool accumulate) {
    const real sv = *s;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (accumulate ? out[i] : 0) + sv * inp[i];
}
template <typename real>
void scalar_scale_backward_cpu(real *dinp, real *ds, const real *dout, const real *inp, const real *s, size_t n) {
    const real sv = *s;
    real acc = 0;
    for (size_t i = 0; i < n; i++) {
        dinp[i] += sv * dout[i];
        acc += dout[i] * inp[i];
    }
    *ds += acc;
}

// relu^2: out = max(x, 0)^2, elementwise over n values
template <typename real>
void relu2_forward_cpu(real *out, const real *inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        real r = inp[i] > 0 ? inp[i] : 0;
        out[i] = r * r;
    }
}
template <typename real>
void relu2_backward_cpu(real *dinp, const real *dout, const real *inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0 ? 2 * inp[i] * dout[i] : 0;
}

// ----------------------------------------------------------------------------
// matmul: out(N, OC) = inp(N, IC) @ W^T, W (OC, IC) as nn.Linear stores it (no bias anywhere)
//
// The loops work on tiles of MM_TILE rows so that a row of W (forward, input gradient) or of
// inp (weight gradient) is loaded once per tile and reused from L1, not once per row: the
// simple versions are memory-bound and several times slower. Each sum still runs over the
// reduction index in order, so the results do not depend on the tiling or the threads.

constexpr int MM_TILE = 8;

template <typename real>
void matmul_forward_cpu(real *out, const real *inp, const real *weight, int N, int IC, int OC) {
    const int tiles = (N + MM_TILE - 1) / MM_TILE;
#pragma omp parallel for
    for (int tile = 0; tile < tiles; tile++) {
        const int n0 = tile * MM_TILE, nt = std::min(MM_TILE, N - n0);
        for (int o = 0; o < OC; o++) {
            const real *w = weight + (size_t)o * IC;
            for (int r = 0; r < nt; r++) {
                // out[n,o] = inp[n,:] . W[o,:]
                const real *x = inp + (size_t)(n0 + r) * IC;
                real acc = 0;
#pragma omp simd reduction(+ : acc)
                for (int i = 0; i < IC; i++) acc += x[i] * w[i];
                out[(size_t)(n0 + r) * OC + o] = acc;
            }
        }
    }
}
// dinp += dout @ W, dweight += dout^T @ inp (either may be null: that gradient is not wanted)
template <typename real>
void matmul_backward_cpu(real *dinp, real *dweight, const real *dout, const real *inp, const real *weight,
                         int N, int IC, int OC) {
    if (dinp) {
        const int tiles = (N + MM_TILE - 1) / MM_TILE;
#pragma omp parallel for
        for (int tile = 0; tile < tiles; tile++) {
            const int n0 = tile * MM_TILE, nt = std::min(MM_TILE, N - n0);
            for (int o = 0; o < OC; o++) {
                const real *w = weight + (size_t)o * IC;
                for (int r = 0; r < nt; r++) {
                    // dinp[n,:] += dout[n,o] * W[o,:]
                    const real a = dout[(size_t)(n0 + r) * OC + o];
                    real *dx = dinp + (size_t)(n0 + r) * IC;
#pragma omp simd
                    for (int i = 0; i < IC; i++) dx[i] += a * w[i];
                }
            }
        }
    }
    if (!dweight) return;
    const int tiles = (OC + MM_TILE - 1) / MM_TILE;
#pragma omp parallel for
    for (int tile = 0; tile < tiles; tile++) {
        const int o0 = tile * MM_TILE, ot = std::min(MM_TILE, OC - o0);
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * IC;
            for (int r = 0; r < ot; r++) {
                // dW[o,:] += dout[n,o] * inp[n,:]
                const real a = dout[(size_t)n * OC + o0 + r];
                real *dw = dweight + (size_t)(o0 + r) * IC;
#pragma omp simd
                for (int i = 0; i < IC; i++) dw[i] += a * x[i];
            }
        }
    }
}

// The MLP's fc GEMM with relu^2 in its epilogue (CPU twins of matmul_relu2_forward /
// matmul_relu2_backward_dx, matmul.cuh), in the GPU kernels' argument order (M rows, K the
// reduction, N the output columns). In real arithmetic they are the matmul and the relu^2 pass
// composed; the GPU kernels round once, to bf16 from the fp32 accumulator, where the cuBLASLt
// path (matmul_forward with its RELU epilogue, then relu2_forward) rounds relu(u) to bf16 first.
// The model itself (model_forward / model_backward) keeps the separate ops: it rounds nothing.
//   forward:  out (M, N) = relu(inp (M, K) @ W^T)^2, W (N, K)
template <typename real>
void matmul_relu2_forward_cpu(real *out, const real *inp, const real *weight, int M, int K, int N) {
    matmul_forward_cpu(out, inp, weight, M, K, N);
    relu2_forward_cpu(out, out, (size_t)M * N);
}
//   backward: dinp (M, N) = (dout (M, K) @ W) * 2 sqrt(h) where h > 0, else 0; W (K, N), h (M, N) the
//             forward's relu^2 (relu2_backward_from_out's factor); overwrites dinp
template <typename real>
void matmul_relu2_backward_dx_cpu(real *dinp, const real *dout, const real *weight, const real *h, int M, int K, int N) {
    std::vector<real> wt((size_t)N * K);  // W^T (N, K): dout @ W = dout @ (W^T)^T, matmul_forward_cpu's form
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) wt[(size_t)n * K + k] = weight[(size_t)k * N + n];
    matmul_forward_cpu(dinp, dout, wt.data(), M, K, N);
#pragma omp parallel for
    for (size_t i = 0; i < (size_t)M * N; i++) dinp[i] = h[i] > 0 ? 2 * std::sqrt(h[i]) * dinp[i] : 0;
}

// ----------------------------------------------------------------------------
// attention

// The per-head path from c_q/c_k output to what attention reads, for q (gain given) or k (no gain):
//   xn = x / sqrt(mean(x^2) + eps) over the head's hd dims,
//   RoPE on dims [0, rd): with x1 = xn[0:rd/2], x2 = xn[rd/2:rd] (half split, not interleaved),
//     (x1, x2) -> (x1 cos + x2 sin, -x1 sin + x2 cos); dims [rd, hd) pass through,
//   out = gain[h] * that.
// inp, xn, out (B, T, NH, hd), rstd (B, T, NH), cos/sin (T, rd/2), gain (NH) or null.
// In two parts: qk_rope_gain_forward_cpu, out from xn, is also the twin of the GPU's
// qk_rope_gain_forward. (The GPU model keeps out, q and k, and recomputes xn from it in its
// backward: qk_xn_from_out_cpu below is that step's twin.)
// Both directions of gain * RoPE over every head-row: dst = g RoPE(src), or (inverse) dst =
// RoPE^T(src) / g (0 where g = 0), the rotation's transpose being its inverse.
template <typename real>
void qk_rope_rows_cpu(real *dst, const real *src, const real *cos_t, const real *sin_t, const real *gain, int B, int T, int NH,
                      int hd, int rd, bool inverse) {
    const int half = rd / 2;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < B * T; n++) {
        for (int h = 0; h < NH; h++) {
            // seek to head h of token n, and the RoPE row of its position
            size_t at = ((size_t)n * NH + h) * hd;
            const real *y = src + at;
            real *o = dst + at;
            const real *c = cos_t + (size_t)(n % T) * half, *s = sin_t + (size_t)(n % T) * half;
            real g = gain ? gain[h] : 1;
            if (inverse) g = g != 0 ? 1 / g : 0;
            for (int i = 0; i < half; i++) {
                real x1 = y[i], x2 = y[i + half];
                if (inverse) {
                    o[i] = g * (x1 * c[i] - x2 * s[i]);
                    o[i + half] = g * (x1 * s[i] + x2 * c[i]);
                } else {
                    o[i] = g * (x1 * c[i] + x2 * s[i]);
                    o[i + half] = g * (-x1 * s[i] + x2 * c[i]);
                }
            }
            for (int i = rd; i < hd; i++) o[i] = g * y[i];
        }
    }
}
template <typename real>
void qk_rope_gain_forward_cpu(real *out, const real *xn, const real *cos_t, const real *sin_t, const real *gain, int B,
                              int T, int NH, int hd, int rd) {
    qk_rope_rows_cpu(out, xn, cos_t, sin_t, gain, B, T, NH, hd, rd, false);
}
template <typename real>
void qk_norm_rope_gain_forward_cpu(real *out, real *xn, real *rstd, const real *inp, const real *cos_t,
                                   const real *sin_t, const real *gain, int B, int T, int NH, int hd, int rd) {
#pragma omp parallel for
    for (size_t hr = 0; hr < (size_t)B * T * NH; hr++) {  // head-row hr = (token n, head h)
        const real *x = inp + hr * hd;
        real *y = xn + hr * hd;
        real ss = 0;
        for (int i = 0; i < hd; i++) ss += x[i] * x[i];
        real r = 1 / std::sqrt(ss / hd + (real)RMS_EPS);
        rstd[hr] = r;
        for (int i = 0; i < hd; i++) y[i] = x[i] * r;
    }
    qk_rope_gain_forward_cpu(out, xn, cos_t, sin_t, gain, B, T, NH, hd, rd);
}
// xn (B, T, NH, hd) = RoPE^T(out) / gain[h] (0 where gain[h] = 0): the forward's xn from its out.
// The twin of what the GPU's q/k backward does in registers when it is given out instead of xn
// (qk_out_grad8 in layers.cuh); the CPU model keeps xn itself.
template <typename real>
void qk_xn_from_out_cpu(real *xn, const real *out, const real *cos_t, const real *sin_t, const real *gain, int B, int T,
                        int NH, int hd, int rd) {
    qk_rope_rows_cpu(xn, out, cos_t, sin_t, gain, B, T, NH, hd, rd, true);
}
// dinp += d/dx; dgain[h] += sum over tokens of dout . rope(xn) (dgain null for k).
// dgain_abs (optional, NH): the sum of the |terms| of each dgain[h], the scale against which its
// rounding error is judged when the sum cancels (dev/model.cu).
template <typename real>
void qk_norm_rope_gain_backward_cpu(real *dinp, real *dgain, const real *dout, const real *xn, const real *rstd,
                                    const real *cos_t, const real *sin_t, const real *gain, int B, int T, int NH,
                                    int hd, int rd, double *dgain_abs = nullptr) {
    const int half = rd / 2;
#pragma omp parallel
    {
        std::vector<real> dy(hd);  // d loss / d xn of one head
#pragma omp for collapse(2)
        for (int n = 0; n < B * T; n++) {
            for (int h = 0; h < NH; h++) {
                size_t at = ((size_t)n * NH + h) * hd;
                const real *d = dout + at, *y = xn + at;
                const real *c = cos_t + (size_t)(n % T) * half, *s = sin_t + (size_t)(n % T) * half;
                real g = gain ? gain[h] : 1;
                // the rotation's transpose: (d1, d2) -> (d1 cos - d2 sin, d1 sin + d2 cos)
                for (int i = 0; i < half; i++) {
                    real d1 = g * d[i], d2 = g * d[i + half];
                    dy[i] = d1 * c[i] - d2 * s[i];
                    dy[i + half] = d1 * s[i] + d2 * c[i];
                }
                for (int i = rd; i < hd; i++) dy[i] = g * d[i];
                // rmsnorm backward over the head: dx = r * (dy - xn * mean(xn * dy))
                real r = rstd[(size_t)n * NH + h], dot = 0;
                for (int i = 0; i < hd; i++) dot += y[i] * dy[i];
                real m = dot / hd;
                real *dx = dinp + at;
                for (int i = 0; i < hd; i++) dx[i] += r * (dy[i] - y[i] * m);
            }
        }
    }
    if (!dgain) return;
#pragma omp parallel for
    for (int h = 0; h < NH; h++) {  // one head per iteration: dgain[h] has one writer
        real acc = 0;
        double sabs = 0;
        for (int n = 0; n < B * T; n++) {
            size_t at = ((size_t)n * NH + h) * hd;
            const real *d = dout + at, *y = xn + at;
            const real *c = cos_t + (size_t)(n % T) * half, *s = sin_t + (size_t)(n % T) * half;
            for (int i = 0; i < half; i++) {
                real x1 = y[i], x2 = y[i + half];
                const real t1 = d[i] * (x1 * c[i] + x2 * s[i]), t2 = d[i + half] * (-x1 * s[i] + x2 * c[i]);
                acc += t1 + t2;
                if (dgain_abs) sabs += std::fabs((double)t1) + std::fabs((double)t2);
            }
            for (int i = rd; i < hd; i++) {
                acc += d[i] * y[i];
                if (dgain_abs) sabs += std::fabs((double)d[i] * y[i]);
            }
        }
        dgain[h] += acc;
        if (dgain_abs) dgain_abs[h] = sabs;
    }
}

// Causal softmax attention with GQA: query head h reads KV head h / (H/KV).
//   out[b,t,h] = sum_{s<=t} softmax_s(q[b,t,h] . k[b,s,kh] / sqrt(hd)) v[b,s,kh]
// The backward rebuilds the probabilities from lse (the log-sum-exp of each row, as flash
// attention keeps it) instead of storing the (T, T) matrix.
// q, out (B, T, H, hd), k, v (B, T, KV, hd), lse (B, H, T)
// q_begin > 0: only the queries at positions [q_begin, T) (the eval's scored rows): q, out
// (B, T - q_begin, H, hd) and lse (B, H, T - q_begin) hold those rows; k, v keep all T.
template <typename real>
void attention_forward_cpu(real *out, real *lse, const real *q, const real *k, const real *v, int B, int T, int H,
                           int KV, int hd, int q_begin = 0) {
    const real scale = 1 / std::sqrt((real)hd);
    const int group = H / KV, TQ = T - q_begin;
#pragma omp parallel
    {
        std::vector<real> p(T);
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                for (int tq = 0; tq < TQ; tq++) {
                    // seek to q[b,t,h,:], out[b,t,h,:] (row tq of the query rows, position t)
                    const int kh = h / group, t = q_begin + tq;
                    const real *qt = q + (((size_t)b * TQ + tq) * H + h) * hd;
                    real *o = out + (((size_t)b * TQ + tq) * H + h) * hd;
                    real mx = -std::numeric_limits<real>::infinity();
                    for (int s = 0; s <= t; s++) {
                        const real *ks = k + (((size_t)b * T + s) * KV + kh) * hd;
                        real dot = 0;
#pragma omp simd reduction(+ : dot)
                        for (int i = 0; i < hd; i++) dot += qt[i] * ks[i];
                        p[s] = dot * scale;
                        mx = std::max(mx, p[s]);
                    }
                    real sum = 0;
                    for (int s = 0; s <= t; s++) {
                        p[s] = std::exp(p[s] - mx);
                        sum += p[s];
                    }
                    for (int i = 0; i < hd; i++) o[i] = 0;
                    for (int s = 0; s <= t; s++) {
                        const real *vs = v + (((size_t)b * T + s) * KV + kh) * hd;
                        const real w = p[s] / sum;
#pragma omp simd
                        for (int i = 0; i < hd; i++) o[i] += w * vs[i];
                    }
                    lse[((size_t)b * H + h) * TQ + tq] = mx + std::log(sum);
                }
            }
        }
    }
}
// With P[t,s] = exp(score[t,s] - lse[t]), dP[t,s] = dout[t] . v[s], Dt = dout[t] . out[t]:
//   dS = P * (dP - Dt); dq[t] += dS k[s] / sqrt(hd); dk[s] += dS q[t] / sqrt(hd); dv[s] += P dout[t]
// Two passes so that each gradient row has one writer: first dq (per query row), then dk and
// dv (per key row, summing over every query head of its group).
template <typename real>
void attention_backward_cpu(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                            const real *v, const real *out, const real *lse, int B, int T, int H, int KV, int hd) {
    const real scale = 1 / std::sqrt((real)hd);
    const int group = H / KV;
    auto qrow = [&](const real *base, int b, int t, int h) { return base + (((size_t)b * T + t) * H + h) * hd; };
    auto kvrow = [&](const real *base, int b, int t, int kh) { return base + (((size_t)b * T + t) * KV + kh) * hd; };
    auto dot = [hd](const real *a, const real *c) {
        real s = 0;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < hd; i++) s += a[i] * c[i];
        return s;
    };
    std::vector<real> Dt((size_t)B * H * T);  // (B, H, T)
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) Dt[((size_t)b * H + h) * T + t] = dot(qrow(dout, b, t, h), qrow(out, b, t, h));
    // pass 1: dq
#pragma omp parallel for collapse(3) schedule(dynamic, 16)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const int kh = h / group;
                const size_t row = ((size_t)b * H + h) * T + t;
                const real *qt = qrow(q, b, t, h), *dt = qrow(dout, b, t, h);
                real *dqt = (real *)qrow(dq, b, t, h);
                for (int s = 0; s <= t; s++) {
                    const real *ks = kvrow(k, b, s, kh);
                    real p = std::exp(dot(qt, ks) * scale - lse[row]);
                    real ds = p * (dot(dt, kvrow(v, b, s, kh)) - Dt[row]);
#pragma omp simd
                    for (int i = 0; i < hd; i++) dqt[i] += ds * scale * ks[i];
                }
            }
        }
    }
    // pass 2: dk, dv
#pragma omp parallel for collapse(3) schedule(dynamic, 16)
    for (int b = 0; b < B; b++) {
        for (int kh = 0; kh < KV; kh++) {
            for (int s = 0; s < T; s++) {
                const real *ks = kvrow(k, b, s, kh), *vs = kvrow(v, b, s, kh);
                real *dks = (real *)kvrow(dk, b, s, kh), *dvs = (real *)kvrow(dv, b, s, kh);
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    for (int t = s; t < T; t++) {
                        const size_t row = ((size_t)b * H + h) * T + t;
                        const real *qt = qrow(q, b, t, h), *dt = qrow(dout, b, t, h);
                        real p = std::exp(dot(qt, ks) * scale - lse[row]);
                        real ds = p * (dot(dt, vs) - Dt[row]);
#pragma omp simd
                        for (int i = 0; i < hd; i++) {
                            dvs[i] += p * dt[i];
                            dks[i] += ds * scale * qt[i];
                        }
                    }
                }
            }
        }
    }
}

// XSA (exclusive self attention, last XSA_LAST_N layers): remove from each query head's output
// its component along its own position's value direction:
//   vn = v / max(|v|, 1e-12) (F.normalize), out = y - (y . vn) vn, for every head of the group.
// y, out (B*T, H, hd), v (B*T, KV, hd), vnorm (B*T, KV) = |v|
template <typename real>
void xsa_forward_cpu(real *out, real *vnorm, const real *y, const real *v, int N, int H, int KV, int hd) {
    const int group = H / KV;
#pragma omp parallel for collapse(2)
    for (int n = 0; n < N; n++) {
        for (int kh = 0; kh < KV; kh++) {
            const real *vv = v + ((size_t)n * KV + kh) * hd;
            real ss = 0;
            for (int i = 0; i < hd; i++) ss += vv[i] * vv[i];
            real nrm = std::sqrt(ss);
            vnorm[(size_t)n * KV + kh] = nrm;
            const real inv = 1 / std::max(nrm, (real)XSA_NORM_EPS);
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                // seek to y[n,h,:], out[n,h,:]
                const real *yy = y + ((size_t)n * H + h) * hd;
                real *o = out + ((size_t)n * H + h) * hd;
                real c = 0;
                for (int i = 0; i < hd; i++) c += yy[i] * vv[i] * inv;
                for (int i = 0; i < hd; i++) o[i] = yy[i] - c * vv[i] * inv;
            }
        }
    }
}
// out = (I - vn vn^T) y, so dy = dout - (dout . vn) vn and d vn = -((y . vn) dout + (dout . vn) y)
// summed over the group; then vn = v / |v| gives dv = (dvn - vn (vn . dvn)) / |v| (dvn / eps
// when the norm was clamped).
template <typename real>
void xsa_backward_cpu(real *dy, real *dv, const real *dout, const real *y, const real *v, const real *vnorm, int N,
                      int H, int KV, int hd) {
    const int group = H / KV;
#pragma omp parallel
    {
        std::vector<real> vn(hd), dvn(hd);
#pragma omp for collapse(2)
        for (int n = 0; n < N; n++) {
            for (int kh = 0; kh < KV; kh++) {
                const real *vv = v + ((size_t)n * KV + kh) * hd;
                const real nrm = vnorm[(size_t)n * KV + kh];
                const bool clamped = !(nrm > (real)XSA_NORM_EPS);
                const real den = clamped ? (real)XSA_NORM_EPS : nrm;
                for (int i = 0; i < hd; i++) { vn[i] = vv[i] / den; dvn[i] = 0; }
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const real *yy = y + ((size_t)n * H + h) * hd, *d = dout + ((size_t)n * H + h) * hd;
                    real *dyy = dy + ((size_t)n * H + h) * hd;
                    real c = 0, g = 0;  // y . vn, dout . vn
                    for (int i = 0; i < hd; i++) { c += yy[i] * vn[i]; g += d[i] * vn[i]; }
                    for (int i = 0; i < hd; i++) {
                        dyy[i] += d[i] - g * vn[i];
                        dvn[i] -= c * d[i] + g * yy[i];
                    }
                }
                real *dvv = dv + ((size_t)n * KV + kh) * hd;
                if (clamped) {
                    for (int i = 0; i < hd; i++) dvv[i] += dvn[i] / den;
                } else {
                    real m = 0;
                    for (int i = 0; i < hd; i++) m += vn[i] * dvn[i];
                    for (int i = 0; i < hd; i++) dvv[i] += (dvn[i] - vn[i] * m) / den;
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// the head and the loss

// logits = cap * tanh(z / cap), elementwise (in place is fine)
template <typename real>
void softcap_forward_cpu(real *out, const real *inp, real cap, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = cap * std::tanh(inp[i] / cap);
}
// IN PLACE: turns d loss / d logits into d loss / d z, using the softcapped logits:
// d/dz cap*tanh(z/cap) = 1 - tanh^2 = 1 - (logits/cap)^2.
template <typename real>
void softcap_backward_cpu(real *dlogits, const real *logits, real cap, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        real th = logits[i] / cap;
        dlogits[i] *= 1 - th * th;
    }
}

// losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]], logits (N, V)
template <typename real>
void crossentropy_forward_cpu(real *losses, const real *logits, const int *targets, int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *l = logits + (size_t)n * V;
        real mx = l[0];
        for (int i = 1; i < V; i++) mx = std::max(mx, l[i]);
        real sum = 0;
        for (int i = 0; i < V; i++) sum += std::exp(l[i] - mx);
        losses[n] = mx + std::log(sum) - l[targets[n]];
    }
}
// dlogits[n,:] += dloss[n] * (softmax(logits[n,:]) - onehot(targets[n])); dloss is one number
// here (1/N for the mean loss, times the caller's loss scale)
template <typename real>
void crossentropy_backward_cpu(real *dlogits, const real *logits, const int *targets, real dloss, int N, int V) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *l = logits + (size_t)n * V;
        real *d = dlogits + (size_t)n * V;
        real mx = l[0];
        for (int i = 1; i < V; i++) mx = std::max(mx, l[i]);
        real sum = 0;
        for (int i = 0; i < V; i++) sum += std::exp(l[i] - mx);
        for (int i = 0; i < V; i++) d[i] += dloss * std::exp(l[i] - mx) / sum;
        d[targets[n]] -= dloss;
    }
}

// ----------------------------------------------------------------------------
// late QAT: fake int6 quantization of a linear weight, row by row (the reference's CastedLinear
// in training mode once QAT is on). s = max(rowmax|w| / 31, 1/31), q = clamp(round(w/s), -32, 31)
// with round-half-to-even, w_q = q * s. The gradient is straight-through: the backward uses w_q
// in place of w for the input gradient and hands the weight gradient to w unchanged.
// w, out (rows, cols); out may equal w
template <typename real>
void fake_quant_cpu(real *out, const real *w, int rows, int cols) {
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const real *x = w + (size_t)r * cols;
        real *o = out + (size_t)r * cols;
        real mx = 0;
        for (int i = 0; i < cols; i++) mx = std::max(mx, std::fabs(x[i]));
        const real s = std::max(mx / (real)31, (real)(1.0 / 31.0));
        for (int i = 0; i < cols; i++) {
            real q = std::nearbyint(x[i] / s);  // default rounding mode: half to even, as torch.round
            q = std::min(std::max(q, (real)-32), (real)31);
            o[i] = q * s;
        }
    }
}

// ----------------------------------------------------------------------------
// the eval's scored rows: dst (B, T - s, C) = rows [s, T) of each sequence of src (B, T, C)
// (GPU twin: gather_suffix_rows in model_gpu.cuh)

template <typename E>
void gather_suffix_rows_cpu(E *dst, const E *src, int B, int T, int s, int C) {
    const int S = T - s;
    for (int b = 0; b < B; b++)
        memcpy(dst + (size_t)b * S * C, src + ((size_t)b * T + s) * C, (size_t)S * C * sizeof(E));
}

// ----------------------------------------------------------------------------
// the model's activations: everything the backward needs, in one allocation

template <typename real>
struct LayerActs {
    real *resid;     // (B,T,D)     the block's input x (after the skip add on decoder layers)
    real *x_in;      // (B,T,D)     mix[0]*x + mix[1]*x0
    real *rstd1;     // (B,T)
    real *ln1;       // (B,T,D)     rmsnorm(x_in) * s: the input of c_q, c_k, c_v
    real *qn;        // (B,T,H,hd)  c_q output after the per-head rmsnorm, before RoPE and gain
    real *kn;        // (B,T,KV,hd)
    real *rstd_q;    // (B,T,H)
    real *rstd_k;    // (B,T,KV)
    real *q;         // (B,T,H,hd)  after RoPE and q_gain: what attention reads
    real *k;         // (B,T,KV,hd) after RoPE
    real *v;         // (B,T,KV,hd) c_v output (+ the value embedding on VE layers)
    real *att;       // (B,T,H,hd)  causal softmax attention output
    real *lse;       // (B,H,T)     log-sum-exp of each softmax row
    real *vnorm;     // (B,T,KV)    |v|                 (XSA layers only, else empty)
    real *att_xsa;   // (B,T,H,hd)  att minus its self-value component (XSA layers only, else empty)
    real *attn_out;  // (B,T,D)     proj(att or att_xsa)
    real *x_mid;     // (B,T,D)     x_in + attn_scale * attn_out
    real *rstd2;     // (B,T)
    real *ln2;       // (B,T,D)     rmsnorm(x_mid) * s
    real *fc_pre;    // (B,T,F)     fc(ln2)
    real *fc_act;    // (B,T,F)     relu(fc_pre)^2
    real *mlp_out;   // (B,T,D)     proj(fc_act)
    real *out;       // (B,T,D)     x_mid + mlp_scale * mlp_out: the block's output
};

template <typename real>
struct Acts {
    int B = 0, T = 0;
    int score_from = 0;             // the last forward's score_from (> 0: no backward possible)
    std::vector<int> ids, targets;  // (B,T) copies of the last forward's inputs (targets empty if none)
    std::vector<int> bigram_idx;    // (B,T) the BigramHash bucket of each position
    real *rope_cos, *rope_sin;      // (T, rd/2)
    real *bg_emb;                   // (B,T,bigram_dim) bigram.embed[bigram_idx]
    real *bg_proj;                  // (B,T,D) bigram.proj(bg_emb)
    real *emb;                      // (B,T,D) tok_emb[ids] + bigram_scale * bg_proj
    real *rstd0;                    // (B,T)
    real *emb_norm;                 // (B,T,D) rmsnorm(emb)
    real *x0;                       // (B,T,D) smear(emb_norm): the input of block 0, mixed into every block
    real *ve_emb;                   // (B,T,ve_dim) ve_shared.embed[ids]        (VE only, else empty)
    real *ve_proj;                  // (B,T,KV*hd) ve_shared.proj(ve_emb)      (VE only)
    real *ve_base;                  // (B,T,KV*hd) ve_shared.scale * ve_proj   (VE only)
    std::vector<LayerActs<real>> layers;  // L of them
    real *q_raw, *k_raw;            // (B,T,D), (B,T,KV*hd) scratch: c_q / c_k outputs before the qk norm
    real *rstd_f;                   // (B,T)
    real *xf;                       // (B,T,D) final rmsnorm
    real *logits;                   // (B,T,V) softcapped logits
    real *losses;                   // (B,T)   per-token negative log-likelihood (with targets)
    std::vector<real> mem;
};

// The gradients of the activations, used only inside model_backward (one allocation too).
template <typename real>
struct GradActs {
    real *dlogits;   // (B,T,V)
    real *dxf;       // (B,T,D)
    real *dres;      // (B,T,D)  gradient of the current block's output
    real *dres_in;   // (B,T,D)  gradient of the current block's input
    real *dx0;       // (B,T,D)
    real *dskip;     // (n_skip, B,T,D) gradient of encoder output n_enc-1-i through skip i
    real *dx_in, *dx_mid, *dln;  // (B,T,D)
    real *dattn_out, *datt_xsa, *datt, *dq, *dq_raw;  // (B,T,D)
    real *dk, *dv, *dk_raw;      // (B,T,KV*hd)
    real *dmlp_out;              // (B,T,D)
    real *dfc_act, *dfc_pre;     // (B,T,F)
    real *dve_base, *dve_proj;   // (B,T,KV*hd)  VE only
    real *dve_emb;               // (B,T,ve_dim) VE only
    real *demb, *demb_norm, *dbg_proj;  // (B,T,D)
    real *dbg_emb;               // (B,T,bigram_dim)
    std::vector<real> mem;
};

// Walk every activation pointer with its element count (0 = not used in this config).
template <typename real, typename Fn>
void acts_visit(Acts<real> &a, const Config &c, int B, int T, Fn fn) {
    const size_t N = (size_t)B * T, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, KVD = c.kv_dim;
    const size_t F = c.mlp_hidden, V = c.vocab_size, VE = c.ve_enabled ? 1 : 0;
    fn(a.rope_cos, (size_t)T * c.rope_dims_eff / 2);
    fn(a.rope_sin, (size_t)T * c.rope_dims_eff / 2);
    fn(a.bg_emb, N * c.bigram_dim);
    fn(a.bg_proj, N * D);
    fn(a.emb, N * D);
    fn(a.rstd0, N);
    fn(a.emb_norm, N * D);
    fn(a.x0, N * D);
    fn(a.ve_emb, VE * N * c.ve_dim);
    fn(a.ve_proj, VE * N * KVD);
    fn(a.ve_base, VE * N * KVD);
    a.layers.resize(c.num_layers);
    for (int l = 0; l < c.num_layers; l++) {
        LayerActs<real> &la = a.layers[l];
        const size_t X = layer_has_xsa(c, l) ? 1 : 0;
        fn(la.resid, N * D);
        fn(la.x_in, N * D);
        fn(la.rstd1, N);
        fn(la.ln1, N * D);
        fn(la.qn, N * D);
        fn(la.kn, N * KVD);
        fn(la.rstd_q, N * H);
        fn(la.rstd_k, N * KV);
        fn(la.q, N * D);
        fn(la.k, N * KVD);
        fn(la.v, N * KVD);
        fn(la.att, N * D);
        fn(la.lse, N * H);
        fn(la.vnorm, X * N * KV);
        fn(la.att_xsa, X * N * D);
        fn(la.attn_out, N * D);
        fn(la.x_mid, N * D);
        fn(la.rstd2, N);
        fn(la.ln2, N * D);
        fn(la.fc_pre, N * F);
        fn(la.fc_act, N * F);
        fn(la.mlp_out, N * D);
        fn(la.out, N * D);
    }
    fn(a.q_raw, N * D);
    fn(a.k_raw, N * KVD);
    fn(a.rstd_f, N);
    fn(a.xf, N * D);
    fn(a.logits, N * V);
    fn(a.losses, N);
}

template <typename real, typename Fn>
void grad_acts_visit(GradActs<real> &g, const Config &c, int B, int T, Fn fn) {
    const size_t N = (size_t)B * T, D = c.model_dim, KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size;
    const size_t VE = c.ve_enabled ? 1 : 0;
    fn(g.dlogits, N * V);
    fn(g.dxf, N * D);
    fn(g.dres, N * D);
    fn(g.dres_in, N * D);
    fn(g.dx0, N * D);
    fn(g.dskip, (size_t)c.num_skip * N * D);
    fn(g.dx_in, N * D);
    fn(g.dx_mid, N * D);
    fn(g.dln, N * D);
    fn(g.dattn_out, N * D);
    fn(g.datt_xsa, N * D);
    fn(g.datt, N * D);
    fn(g.dq, N * D);
    fn(g.dq_raw, N * D);
    fn(g.dk, N * KVD);
    fn(g.dv, N * KVD);
    fn(g.dk_raw, N * KVD);
    fn(g.dmlp_out, N * D);
    fn(g.dfc_act, N * F);
    fn(g.dfc_pre, N * F);
    fn(g.dve_base, VE * N * KVD);
    fn(g.dve_proj, VE * N * KVD);
    fn(g.dve_emb, VE * N * c.ve_dim);
    fn(g.demb, N * D);
    fn(g.demb_norm, N * D);
    fn(g.dbg_proj, N * D);
    fn(g.dbg_emb, N * c.bigram_dim);
}

// Bytes of the activations of one forward of B sequences of T tokens (and of its backward when
// `grads`): what model_forward / model_backward allocate, for memory checks before a run.
inline double model_cpu_acts_bytes(const Config &c, int B, int T, bool grads) {
    size_t n = 0;
    Acts<float> a;
    acts_visit(a, c, B, T, [&](float *&, size_t k) { n += k; });
    if (grads) {
        GradActs<float> g;
        grad_acts_visit(g, c, B, T, [&](float *&, size_t k) { n += k; });
    }
    return (double)n * sizeof(float);
}

// Carve the pointers of a struct out of one vector, via its visitor.
template <typename real, typename Visit>
void carve(std::vector<real> &mem, Visit visit) {
    size_t total = 0;
    visit([&](real *&, size_t n) { total += n; });
    mem.assign(total, (real)0);
    size_t off = 0;
    visit([&](real *&p, size_t n) { p = mem.data() + off; off += n; });
}

// ----------------------------------------------------------------------------
// the model

template <typename real>
struct ModelCPU {
    Config config;
    TensorList tensors;          // names, shapes, offsets of the flat buffers below
    std::vector<real> params_mem, grads_mem, qparams_mem;  // (tensors.flat) each
    Params<real> params;         // the weights
    Params<real> grads;          // d loss / d weights, same layout
    Params<real> qparams;        // QAT: the weights with every linear weight fake-quantized
    QatMode qat = QAT_OFF;       // the weights the forward uses (set by the trainer; eval runs QAT_OFF)
    QatMode qat_used = QAT_OFF;  // what the last forward used (the backward follows it)
    Acts<real> acts;
    GradActs<real> gacts;
    int gacts_B = 0, gacts_T = 0;
    real loss = 0;               // mean loss of the last forward with targets
    std::vector<double> q_gain_terms_abs;  // (L, H) of the last backward: the sum of |terms| of each
                                           // q_gain gradient (the scale dev/model.cu judges it by)

    ModelCPU() = default;
    // a copy would keep pointing into the original's buffers: build another one instead
    ModelCPU(const ModelCPU &) = delete;
    ModelCPU &operator=(const ModelCPU &) = delete;
};

template <typename real>
void model_build(ModelCPU<real> &m, const Config &c) {
    m.config = c;
    m.tensors = build_tensor_list(c);
    m.params_mem.assign(m.tensors.flat, (real)0);
    m.grads_mem.assign(m.tensors.flat, (real)0);
    params_bind(m.params, c, m.params_mem.data());
    params_bind(m.grads, c, m.grads_mem.data());
    m.acts = Acts<real>();
    m.gacts = GradActs<real>();
    m.gacts_B = m.gacts_T = 0;
}

template <typename real>
void model_zero_grad(ModelCPU<real> &m) {
    std::fill(m.grads_mem.begin(), m.grads_mem.end(), (real)0);
}

// qparams = params with every linear weight fake-quantized
template <typename real>
void model_refresh_qat(ModelCPU<real> &m) {
    if (m.qparams_mem.size() != m.params_mem.size()) {
        m.qparams_mem.assign(m.params_mem.size(), (real)0);
        params_bind(m.qparams, m.config, m.qparams_mem.data());
    }
    std::copy(m.params_mem.begin(), m.params_mem.end(), m.qparams_mem.begin());
    // the same offsets in both buffers: quantize the qparams copy in place
    visit_linear_weights(m.qparams, m.config, [&](real *w, int rows, int cols) { fake_quant_cpu(w, w, rows, cols); });
}

// The forward pass. ids, targets (B, T) int32; targets may be null (then only the logits are
// computed, e.g. for eval). Returns the mean cross-entropy (0 without targets). Afterwards
// m.acts.logits (B,T,V) holds the softcapped logits and m.acts.losses (B,T) the per-token NLL.
// Uses the fake-quantized weights when m.qat is QAT_INT6.
// score_from = s > 0 (eval only, no backward after it): only the positions [s, T) of each
// sequence are wanted. Every layer still runs on all rows (attention reads every position's K and
// V), but the last block past its K and V, the final norm, the head and the loss are per-row, so
// they run on the rows [s, T) only: logits and losses (and the last block's activations from q on)
// then hold (B, T - s, ...), bit-identical to those rows of a full forward.
template <typename real>
real model_forward(ModelCPU<real> &m, const int *ids, const int *targets, int B, int T, int score_from = 0) {
    const Config &c = m.config;
    const int N = B * T, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
    const int KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size, L = c.num_layers, rd = c.rope_dims_eff;
    const int nE = c.num_encoder;
    Acts<real> &a = m.acts;
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0 || ids[n] >= V) fatal("model_forward: token id %d at position %d is out of range for vocab size %d", ids[n], n, V);
        if (targets && (targets[n] < 0 || targets[n] >= V))
            fatal("model_forward: target id %d at position %d is out of range for vocab size %d", targets[n], n, V);
    }
    if (a.B != B || a.T != T || a.mem.empty()) {
        carve(a.mem, [&](auto f) { acts_visit(a, c, B, T, f); });
        a.B = B;
        a.T = T;
        rope_tables_cpu(a.rope_cos, a.rope_sin, T, rd, c.rope_base);
    }
    if (score_from < 0 || score_from >= T) fatal("model_forward: score_from=%d must be in [0, T=%d)", score_from, T);
    a.score_from = score_from;
    a.ids.assign(ids, ids + N);
    if (targets) a.targets.assign(targets, targets + N);
    else a.targets.clear();
    a.bigram_idx.resize(N);
    m.qat_used = m.qat;
    if (m.qat == QAT_INT6) model_refresh_qat(m);
    const Params<real> &p = m.qat == QAT_INT6 ? m.qparams : m.params;

    // embeddings: x0 = smear(rmsnorm(tok_emb[ids] + scale * bigram.proj(bigram.embed[hash])))
    bigram_hash_cpu(a.bigram_idx.data(), ids, B, T, (int)c.bigram_vocab_size);
    embedding_forward_cpu(a.bg_emb, a.bigram_idx.data(), p.bigram_embed, N, (int)c.bigram_dim);
    matmul_forward_cpu(a.bg_proj, a.bg_emb, p.bigram_proj, N, (int)c.bigram_dim, D);
    embed_sum_forward_cpu(a.emb, ids, p.tok_emb, a.bg_proj, p.bigram_scale, N, D);
    rmsnorm_forward_cpu(a.emb_norm, a.rstd0, a.emb, N, D, (real)1);
    smear_forward_cpu(a.x0, a.emb_norm, p.smear_gate, B, T, D);
    // the shared value embedding, computed once: ve_base = scale * proj(ve_embed[ids])
    if (c.ve_enabled) {
        embedding_forward_cpu(a.ve_emb, ids, p.ve_embed, N, (int)c.ve_dim);
        matmul_forward_cpu(a.ve_proj, a.ve_emb, p.ve_proj, N, (int)c.ve_dim, KVD);
        scalar_scale_forward_cpu(a.ve_base, a.ve_proj, p.ve_scale, (size_t)N * KVD, false);
    }

    // score_from: the last block's scored rows, gathered (ln1, x_in, v, targets of rows [s, T))
    const int sf = score_from, Ns = B * (T - sf);
    std::vector<real> scored_in;
    std::vector<int> scored_targets;

    const real *x = a.x0;
    for (int l = 0; l < L; l++) {
        LayerActs<real> &la = a.layers[l];
        const BlockParams<real> &bp = p.blocks[l];
        const real s = c.ln_scale ? (real)(1.0 / std::sqrt((double)l + 1)) : (real)1;
        // U-Net skip: decoder block i adds skip_weights[i] * (encoder output n_enc-1-i)
        const int i = l - nE;
        if (i >= 0 && i < c.num_skip)
            residual_scale_forward_cpu(la.resid, x, p.skip_weights + (size_t)i * D, a.layers[nE - 1 - i].out, N, D);
        else
            memcpy(la.resid, x, (size_t)N * D * sizeof(real));
        resid_mix_forward_cpu(la.x_in, la.resid, a.x0, bp.resid_mix, N, D);
        // attention
        rmsnorm_forward_cpu(la.ln1, la.rstd1, la.x_in, N, D, s);
        matmul_forward_cpu(a.k_raw, la.ln1, bp.c_k, N, D, KVD);
        matmul_forward_cpu(la.v, la.ln1, bp.c_v, N, D, KVD);
        const int ve = layer_ve_index(c, l);
        if (ve >= 0) scalar_scale_forward_cpu(la.v, a.ve_base, p.ve_layer_scales[ve], (size_t)N * KVD, true);
        qk_norm_rope_gain_forward_cpu(la.k, la.kn, la.rstd_k, a.k_raw, a.rope_cos, a.rope_sin, (const real *)nullptr, B, T, KV, hd, rd);
        // from here on the rows are per-position: in the last block of a score_from forward, only
        // the scored rows [q0, T) of each sequence (Nq of them) go on
        const int q0 = l == L - 1 ? sf : 0, Nq = B * (T - q0);
        const real *ln1 = la.ln1, *x_in = la.x_in, *v = la.v;
        if (q0 > 0) {
            scored_in.resize((size_t)Nq * (2 * D + KVD));
            real *g = scored_in.data();
            gather_suffix_rows_cpu(g, la.ln1, B, T, q0, D);
            gather_suffix_rows_cpu(g + (size_t)Nq * D, la.x_in, B, T, q0, D);
            gather_suffix_rows_cpu(g + (size_t)Nq * 2 * D, la.v, B, T, q0, KVD);
            ln1 = g, x_in = g + (size_t)Nq * D, v = g + (size_t)Nq * 2 * D;
        }
        const size_t rope_at = (size_t)q0 * (rd / 2);  // the RoPE rows of positions q0..
        matmul_forward_cpu(a.q_raw, ln1, bp.c_q, Nq, D, D);
        qk_norm_rope_gain_forward_cpu(la.q, la.qn, la.rstd_q, a.q_raw, a.rope_cos + rope_at, a.rope_sin + rope_at, bp.q_gain, B,
                                      T - q0, H, hd, rd);
        attention_forward_cpu(la.att, la.lse, la.q, la.k, la.v, B, T, H, KV, hd, q0);
        const bool xsa = layer_has_xsa(c, l);
        if (xsa) xsa_forward_cpu(la.att_xsa, la.vnorm, la.att, v, Nq, H, KV, hd);
        matmul_forward_cpu(la.attn_out, xsa ? la.att_xsa : la.att, bp.attn_proj, Nq, D, D);
        residual_scale_forward_cpu(la.x_mid, x_in, bp.attn_scale, la.attn_out, Nq, D);
        // MLP
        rmsnorm_forward_cpu(la.ln2, la.rstd2, la.x_mid, Nq, D, s);
        matmul_forward_cpu(la.fc_pre, la.ln2, bp.fc, Nq, D, F);
        relu2_forward_cpu(la.fc_act, la.fc_pre, (size_t)Nq * F);
        matmul_forward_cpu(la.mlp_out, la.fc_act, bp.mlp_proj, Nq, F, D);
        residual_scale_forward_cpu(la.out, la.x_mid, bp.mlp_scale, la.mlp_out, Nq, D);
        x = la.out;
    }

    // head: tied embedding, softcap, cross-entropy (on the scored rows only: Ns of them)
    rmsnorm_forward_cpu(a.xf, a.rstd_f, x, Ns, D, (real)1);
    matmul_forward_cpu(a.logits, a.xf, p.tok_emb, Ns, D, V);
    softcap_forward_cpu(a.logits, a.logits, (real)c.logit_softcap, (size_t)Ns * V);
    m.loss = 0;
    if (!targets) return 0;
    if (sf > 0) {
        scored_targets.resize(Ns);
        gather_suffix_rows_cpu(scored_targets.data(), targets, B, T, sf, 1);
        targets = scored_targets.data();
    }
    crossentropy_forward_cpu(a.losses, a.logits, targets, Ns, V);
    real sum = 0;
    for (int n = 0; n < Ns; n++) sum += a.losses[n];
    m.loss = sum / Ns;
    return m.loss;
}

// The logits only (eval): (B,T,V) in m.acts.logits, also returned; with score_from, those of
// the positions [score_from, T) only, (B, T - score_from, V) (model_forward).
template <typename real>
const real *model_forward_logits(ModelCPU<real> &m, const int *ids, int B, int T, int score_from = 0) {
    model_forward(m, ids, (const int *)nullptr, B, T, score_from);
    return m.acts.logits;
}

// The forward as eval.h's NllFn: per-position losses in eval mode (QAT_OFF, as the reference's
// model.eval() turns CastedLinear's fake quantization off). Twin of nll_fn_gpu.
// With logits_rounding() = 1 (model.h) the losses are recomputed from z rounded to bf16.
// Only the positions [score_from, T) of each row are computed (model_forward's score_from); out
// holds NaN before them.
inline NllFn nll_fn_cpu(ModelCPU<float> &m) {
    return [&m](const int32_t *x, const int32_t *y, int B, int T, bool sliding, int score_from, float *out) {
        const QatMode train_mode = m.qat;
        m.qat = QAT_OFF;
        model_forward(m, x, y, B, T, score_from);
        m.qat = train_mode;
        const int S = T - score_from;
        if (logits_rounding(m.config, sliding) == 1) {
            const size_t n = (size_t)B * S * m.config.vocab_size;
            for (size_t i = 0; i < n; i++) m.acts.logits[i] = bf16_to_f32(f32_to_bf16(m.acts.logits[i]));
            std::vector<int> ys((size_t)B * S);
            gather_suffix_rows_cpu(ys.data(), y, B, T, score_from, 1);
            crossentropy_forward_cpu(m.acts.losses, m.acts.logits, ys.data(), B * S, (int)m.config.vocab_size);
        }
        std::fill(out, out + (size_t)B * T, std::numeric_limits<float>::quiet_NaN());
        for (int b = 0; b < B; b++)
            memcpy(out + (size_t)b * T + score_from, m.acts.losses + (size_t)b * S, sizeof(float) * S);
    };
}

// The backward pass of the last forward (which must have had targets): ACCUMULATES
// loss_scale * d(mean loss)/d(weights) into m.grads (call model_zero_grad first; loss_scale is
// 1/grad_accum when micro-steps add up). With QAT the gradient is straight-through: computed at
// the fake-quantized weights, then given to the weights themselves.
template <typename real>
void model_backward(ModelCPU<real> &m, real loss_scale = 1) {
    const Config &c = m.config;
    Acts<real> &a = m.acts;
    check_internal(!a.mem.empty() && !a.targets.empty() && a.score_from == 0);
    const int B = a.B, T = a.T, N = B * T, D = c.model_dim, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
    const int KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size, L = c.num_layers, rd = c.rope_dims_eff;
    const int nE = c.num_encoder;
    GradActs<real> &g = m.gacts;
    if (m.gacts_B != B || m.gacts_T != T || g.mem.empty()) {
        carve(g.mem, [&](auto f) { grad_acts_visit(g, c, B, T, f); });
        m.gacts_B = B;
        m.gacts_T = T;
    }
    std::fill(g.mem.begin(), g.mem.end(), (real)0);
    m.q_gain_terms_abs.assign((size_t)L * H, 0.0);
    const Params<real> &p = m.qat_used == QAT_INT6 ? m.qparams : m.params;  // the weights the forward used
    Params<real> &dp = m.grads;
    const size_t ND = (size_t)N * D;
    auto zero = [](real *ptr, size_t n) { std::fill(ptr, ptr + n, (real)0); };

    // head: loss -> logits -> z -> xf -> last block output
    crossentropy_backward_cpu(g.dlogits, a.logits, a.targets.data(), loss_scale / N, N, V);
    softcap_backward_cpu(g.dlogits, a.logits, (real)c.logit_softcap, (size_t)N * V);
    matmul_backward_cpu(g.dxf, dp.tok_emb, g.dlogits, a.xf, p.tok_emb, N, D, V);
    rmsnorm_backward_cpu(g.dres, g.dxf, a.layers[L - 1].out, a.rstd_f, N, D, (real)1);

    for (int l = L - 1; l >= 0; l--) {
        LayerActs<real> &la = a.layers[l];
        const BlockParams<real> &bp = p.blocks[l];
        BlockParams<real> &dbp = dp.blocks[l];
        const real s = c.ln_scale ? (real)(1.0 / std::sqrt((double)l + 1)) : (real)1;
        // an encoder output also feeds a decoder block through its skip
        if (l < nE && nE - 1 - l < c.num_skip) {
            const real *ds = g.dskip + (size_t)(nE - 1 - l) * ND;
            for (size_t j = 0; j < ND; j++) g.dres[j] += ds[j];
        }
        zero(g.dres_in, ND);
        zero(g.dx_in, ND);
        zero(g.dx_mid, ND);
        // MLP: out = x_mid + mlp_scale * proj(relu(fc(rmsnorm(x_mid) * s))^2)
        zero(g.dmlp_out, ND);
        residual_scale_backward_cpu(g.dx_mid, dbp.mlp_scale, g.dmlp_out, g.dres, bp.mlp_scale, la.mlp_out, N, D);
        zero(g.dfc_act, (size_t)N * F);
        matmul_backward_cpu(g.dfc_act, dbp.mlp_proj, g.dmlp_out, la.fc_act, bp.mlp_proj, N, F, D);
        zero(g.dfc_pre, (size_t)N * F);
        relu2_backward_cpu(g.dfc_pre, g.dfc_act, la.fc_pre, (size_t)N * F);
        zero(g.dln, ND);
        matmul_backward_cpu(g.dln, dbp.fc, g.dfc_pre, la.ln2, bp.fc, N, D, F);
        rmsnorm_backward_cpu(g.dx_mid, g.dln, la.x_mid, la.rstd2, N, D, s);
        // attention: x_mid = x_in + attn_scale * proj(xsa(attn(q, k, v)))
        zero(g.dattn_out, ND);
        residual_scale_backward_cpu(g.dx_in, dbp.attn_scale, g.dattn_out, g.dx_mid, bp.attn_scale, la.attn_out, N, D);
        const bool xsa = layer_has_xsa(c, l);
        zero(g.datt_xsa, ND);
        matmul_backward_cpu(g.datt_xsa, dbp.attn_proj, g.dattn_out, xsa ? la.att_xsa : la.att, bp.attn_proj, N, D, D);
        zero(g.dv, (size_t)N * KVD);
        const real *datt = g.datt_xsa;
        if (xsa) {
            zero(g.datt, ND);
            xsa_backward_cpu(g.datt, g.dv, g.datt_xsa, la.att, la.v, la.vnorm, N, H, KV, hd);
            datt = g.datt;
        }
        zero(g.dq, ND);
        zero(g.dk, (size_t)N * KVD);
        attention_backward_cpu(g.dq, g.dk, g.dv, datt, la.q, la.k, la.v, la.att, la.lse, B, T, H, KV, hd);
        zero(g.dq_raw, ND);
        zero(g.dk_raw, (size_t)N * KVD);
        qk_norm_rope_gain_backward_cpu(g.dq_raw, dbp.q_gain, g.dq, la.qn, la.rstd_q, a.rope_cos, a.rope_sin, bp.q_gain, B, T, H, hd, rd,
                                       m.q_gain_terms_abs.data() + (size_t)l * H);
        qk_norm_rope_gain_backward_cpu(g.dk_raw, (real *)nullptr, g.dk, la.kn, la.rstd_k, a.rope_cos, a.rope_sin, (const real *)nullptr, B, T, KV, hd, rd);
        const int ve = layer_ve_index(c, l);
        if (ve >= 0) scalar_scale_backward_cpu(g.dve_base, dp.ve_layer_scales[ve], g.dv, a.ve_base, p.ve_layer_scales[ve], (size_t)N * KVD);
        zero(g.dln, ND);
        matmul_backward_cpu(g.dln, dbp.c_q, g.dq_raw, la.ln1, bp.c_q, N, D, D);
        matmul_backward_cpu(g.dln, dbp.c_k, g.dk_raw, la.ln1, bp.c_k, N, D, KVD);
        matmul_backward_cpu(g.dln, dbp.c_v, g.dv, la.ln1, bp.c_v, N, D, KVD);
        rmsnorm_backward_cpu(g.dx_in, g.dln, la.x_in, la.rstd1, N, D, s);
        // x_in = mix[0] * x + mix[1] * x0
        resid_mix_backward_cpu(g.dres_in, g.dx0, dbp.resid_mix, g.dx_in, la.resid, a.x0, bp.resid_mix, N, D);
        // the skip add of a decoder block: x = prev + skip_weights[i] * enc; prev's gradient is dres_in itself
        const int i = l - nE;
        if (i >= 0 && i < c.num_skip)
            residual_scale_backward_cpu((real *)nullptr, dp.skip_weights + (size_t)i * D, g.dskip + (size_t)i * ND, g.dres_in,
                                        p.skip_weights + (size_t)i * D, a.layers[nE - 1 - i].out, N, D);
        std::swap(g.dres, g.dres_in);  // now the gradient of the previous block's output
    }
    // block 0's input was x0
    for (size_t j = 0; j < ND; j++) g.dx0[j] += g.dres[j];

    // embeddings
    smear_backward_cpu(g.demb_norm, dp.smear_gate, g.dx0, a.emb_norm, p.smear_gate, B, T, D);
    rmsnorm_backward_cpu(g.demb, g.demb_norm, a.emb, a.rstd0, N, D, (real)1);
    embed_sum_backward_cpu(dp.tok_emb, g.dbg_proj, dp.bigram_scale, g.demb, a.ids.data(), a.bg_proj, p.bigram_scale, N, D);
    matmul_backward_cpu(g.dbg_emb, dp.bigram_proj, g.dbg_proj, a.bg_emb, p.bigram_proj, N, (int)c.bigram_dim, D);
    embedding_backward_cpu(dp.bigram_embed, g.dbg_emb, a.bigram_idx.data(), N, (int)c.bigram_dim);
    if (c.ve_enabled) {
        scalar_scale_backward_cpu(g.dve_proj, dp.ve_scale, g.dve_base, a.ve_proj, p.ve_scale, (size_t)N * KVD);
        matmul_backward_cpu(g.dve_emb, dp.ve_proj, g.dve_proj, a.ve_emb, p.ve_proj, N, (int)c.ve_dim, KVD);
        embedding_backward_cpu(dp.ve_embed, g.dve_emb, a.ids.data(), N, (int)c.ve_dim);
    }
}

// ----------------------------------------------------------------------------
// init

// A small seeded RNG: std::mt19937_64 (its output sequence is fixed by the C++ standard) with
// our own uniform and Box-Muller normal, so the same seed gives the same weights everywhere.
// (It does not reproduce torch's RNG: parity runs load weights from a file instead.)
struct Rng {
    std::mt19937_64 gen;
    bool has_spare = false;
    double spare = 0;
    explicit Rng(uint64_t seed) : gen(seed) {}
    double uniform() { return (double)(gen() >> 11) * 0x1.0p-53; }  // [0, 1)
    double normal() {
        if (has_spare) { has_spare = false; return spare; }
        double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]
        double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;  // 2 pi
        spare = r * std::sin(th);
        has_spare = true;
        return r * std::cos(th);
    }
};

// Orthonormalize the nv rows of a (nv, len), nv <= len, in place: with the Gram matrix
// a a^T = L L^T (Cholesky), a <- L^{-1} a. Twice ("CholeskyQR2"): the second pass mops up the
// rounding of the first, leaving the rows orthonormal to ~1e-15 for the condition numbers a
// Gaussian matrix has. The result is the Q of the QR factorization of a^T with R = L^T, whose
// diagonal is positive: exactly the Q that Gram-Schmidt would give, at matmul speed.
inline void orthonormalize_rows(double *a, int nv, int len) {
    std::vector<double> G((size_t)nv * nv);
    const int tiles = (nv + MM_TILE - 1) / MM_TILE;
    for (int pass = 0; pass < 2; pass++) {
        // G = a a^T, lower triangle only (tiled like matmul_forward_cpu: a_k is reused MM_TILE times)
#pragma omp parallel for schedule(dynamic)
        for (int tile = 0; tile < tiles; tile++) {
            const int j0 = tile * MM_TILE, jt = std::min(MM_TILE, nv - j0);
            for (int k = 0; k < j0 + jt; k++) {
                const double *ak = a + (size_t)k * len;
                for (int j = std::max(j0, k); j < j0 + jt; j++) {
                    const double *aj = a + (size_t)j * len;
                    double acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int i = 0; i < len; i++) acc += aj[i] * ak[i];
                    G[(size_t)j * nv + k] = acc;
                }
            }
        }
        for (int j = 0; j < nv; j++) {  // Cholesky, lower triangle of G in place
            double *gj = G.data() + (size_t)j * nv;
            for (int k = 0; k < j; k++) {
                const double *gk = G.data() + (size_t)k * nv;
                double s = gj[k];
                for (int i = 0; i < k; i++) s -= gj[i] * gk[i];
                gj[k] = s / gk[k];
            }
            double s = gj[j];
            for (int i = 0; i < j; i++) s -= gj[i] * gj[i];
            check_internal(s > 0);  // a Gaussian matrix has full rank
            gj[j] = std::sqrt(s);
        }
        // forward substitution a_j <- (a_j - sum_{k<j} L[j,k] a_k) / L[j,j], in column blocks
        const int CB = 64;
#pragma omp parallel for
        for (int c0 = 0; c0 < len; c0 += CB) {
            const int c1 = std::min(len, c0 + CB);
            for (int j = 0; j < nv; j++) {
                const double *lj = G.data() + (size_t)j * nv;
                double *aj = a + (size_t)j * len;
                for (int k = 0; k < j; k++) {
                    const double l = lj[k];
                    const double *ak = a + (size_t)k * len;
#pragma omp simd
                    for (int i = c0; i < c1; i++) aj[i] -= l * ak[i];
                }
                const double inv = 1 / lj[j];
                for (int i = c0; i < c1; i++) aj[i] *= inv;
            }
        }
    }
}

// A random (rows, cols) matrix with orthonormal rows (rows <= cols) or columns (rows > cols),
// times gain, like torch.nn.init.orthogonal_: the Q factor (R's diagonal made positive) of a
// Gaussian matrix, which is Haar-distributed. (Not torch's numbers: its RNG is not ours.)
template <typename real>
void init_orthogonal(real *w, int rows, int cols, double gain, Rng &rng) {
    const bool by_rows = rows <= cols;
    const int nv = by_rows ? rows : cols, len = by_rows ? cols : rows;  // nv vectors of length len
    std::vector<double> a((size_t)nv * len);
    for (int r = 0; r < rows; r++)
        for (int col = 0; col < cols; col++) {
            double z = rng.normal();
            if (by_rows) a[(size_t)r * len + col] = z;
            else a[(size_t)col * len + r] = z;
        }
    orthonormalize_rows(a.data(), nv, len);
    for (int r = 0; r < rows; r++)
        for (int col = 0; col < cols; col++)
            w[(size_t)r * cols + col] = (real)(gain * (by_rows ? a[(size_t)r * len + col] : a[(size_t)col * len + r]));
}

// The reference's init (GPT._init_weights after each module's own init), in tensor-list order:
//   tok_emb N(0, TIED_EMBED_INIT_STD); bigram.embed 0; ve_shared.embed N(0, 0.01);
//   every linear weight with both dims >= 64: orthogonal, times 1/sqrt(2L) for the ".proj"
//     modules that are not zero-initialized (bigram.proj, ve_shared.proj); attn.proj and
//     mlp.proj are zero (_zero_init);
//   smaller linear weights keep their module's init: nn.Linear's default U(-1/sqrt(in),
//     1/sqrt(in)) for c_q, c_k, c_v, fc; zero for bigram.proj and ve_shared.proj;
//   q_gain QK_GAIN_INIT; attn/mlp scales 1; resid_mix (1, 0); skip weights 1; smear gate 0;
//   bigram scale 0.05; VE scale 0.1; VE layer scales 1.
// The reference keeps the three embedding tables in bf16; this init does not round them.
template <typename real>
void model_init(Params<real> &p, const Config &c, uint64_t seed) {
    Rng rng(seed);
    const int D = c.model_dim, KVD = c.kv_dim, F = c.mlp_hidden, V = c.vocab_size, L = c.num_layers;
    auto fill = [](real *w, size_t n, double v) { for (size_t i = 0; i < n; i++) w[i] = (real)v; };
    auto normal = [&](real *w, size_t n, double std) { for (size_t i = 0; i < n; i++) w[i] = (real)(std * rng.normal()); };
    // a linear weight (rows = out features, cols = in features)
    enum { DEFAULT_UNIFORM, DEFAULT_ZERO };
    auto linear = [&](real *w, int rows, int cols, int fallback, double proj_gain) {
        if (rows >= 64 && cols >= 64) init_orthogonal(w, rows, cols, proj_gain, rng);
        else if (fallback == DEFAULT_ZERO) fill(w, (size_t)rows * cols, 0);
        else {
            const double bound = 1.0 / std::sqrt((double)cols);
            for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = (real)(bound * (2 * rng.uniform() - 1));
        }
    };
    const double proj_gain = 1.0 / std::sqrt(2.0 * L);
    fill(p.skip_weights, (size_t)c.num_skip * D, 1);
    normal(p.tok_emb, (size_t)V * D, c.tied_embed_init_std);
    fill(p.bigram_scale, 1, 0.05);
    fill(p.bigram_embed, (size_t)c.bigram_vocab_size * c.bigram_dim, 0);
    linear(p.bigram_proj, D, (int)c.bigram_dim, DEFAULT_ZERO, proj_gain);
    fill(p.smear_gate, D, 0);
    for (int l = 0; l < L; l++) {
        BlockParams<real> &b = p.blocks[l];
        fill(b.attn_scale, D, 1);
        fill(b.mlp_scale, D, 1);
        fill(b.resid_mix, D, 1);
        fill(b.resid_mix + D, D, 0);
        fill(b.q_gain, c.num_heads, c.qk_gain_init);
        linear(b.c_q, D, D, DEFAULT_UNIFORM, 1.0);
        linear(b.c_k, KVD, D, DEFAULT_UNIFORM, 1.0);
        linear(b.c_v, KVD, D, DEFAULT_UNIFORM, 1.0);
        fill(b.attn_proj, (size_t)D * D, 0);
        linear(b.fc, F, D, DEFAULT_UNIFORM, 1.0);
        fill(b.mlp_proj, (size_t)D * F, 0);
    }
    if (c.ve_enabled) {
        fill(p.ve_scale, 1, 0.1);
        normal(p.ve_embed, (size_t)V * c.ve_dim, 0.01);
        linear(p.ve_proj, KVD, (int)c.ve_dim, DEFAULT_ZERO, proj_gain);
        for (real *s : p.ve_layer_scales) fill(s, 1, 1);
    }
    // The reference builds the model in fp32, then calls .bfloat16() on it before it restores
    // the linear weights and control tensors to fp32: every initial value passes through bf16
    // once (bigram.scale starts at 0.050048828125, not 0.05). Do the same, so a run from our
    // init is a run from the reference's.
    visit_tensors<real>(c, &p, [&](const std::string &, std::vector<int64_t> shape, DType, OptGroup, real **slot) {
        real *w = *slot;
        for (size_t i = 0, n = shape_numel(shape); i < n; i++) w[i] = (real)bf16_to_f32(f32_to_bf16((float)w[i]));
    });
}
