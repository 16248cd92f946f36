// dev/attention.cu: checks and benchmarks for common/attention.cuh (causal flash attention with
// GQA, forward and backward, and XSA), against attention_*_cpu / xsa_*_cpu in model_cpu.h.
//
// Versions:
//   version 0: the shipping launchers of common/attention.cuh (FlashAttention-2 style: mma.sync
//              m16n8k16 tensor cores, cp.async double buffering, online softmax; the backward
//              with 8 key warps per CTA, and its 4-key-warp variant "0/kw4" for comparison)
//   version 2: the Hopper forward, stage S1 (attention_forward_wgmma: wgmma + TMA + mbarriers)
//   version 3: the Hopper forward, stage S2 (the same, warp-specialized: a producer warpgroup
//              and 3 consumer warpgroups around a 4-stage K/V ring)
//   version 4: S2 with each consumer's P V product overlapped with the next tile's S and softmax
//   version 5: v4 with 128-key tiles (the producer's registers moved to the consumers: setmaxnreg)
//   version 6: v5 with ping-pong: the 3 consumer warpgroups take turns issuing their products
//              (named barriers), so one's softmax overlaps the others' tensor-core work
//   version 7: v6, o rescaled only when a row's max moved, 1/8 of the exponentials computed
//              on the FMA pipe (exp2_poly, checked below against exp2 on the CPU)
//   version 8: v7 with 1/4 of the exponentials on the FMA pipe
//   version 9: v7 in a persistent grid (one CTA per SM walks the work tiles, longest first;
//              the next tile's Q and K/V load while the current one finishes); checked also
//              as "v9/3cta" with a grid of 3 CTAs, so each walks many work tiles (both Q
//              buffers, the K/V ring's counter carried across tiles of different lengths)
//              v2..v9 run on sm_90a builds on an sm_90 GPU only, otherwise their checks are
//              counted as skipped. attention_forward itself picks one of them there, so v0's
//              forward runs through its own launcher attention_forward_mma; v2..v9 have no
//              backward of their own (they share v0's)
//   version 0/wgmma: the Hopper backward (attention_backward_sm90: wgmma, TMA, mbarriers), what
//              attention_backward runs on an sm_90 GPU in a GPU_ARCH=90a build; elsewhere its
//              rows are skipped (and counted in the closing line)
//   version 0/wgmma-s2: its stage 2 (attention_backward_sm90(..., stage = 2)): dQ partials
//              added by TMA bulk reduce-adds per warpgroup and tile instead of fp32 atomics
//   version 0/wgmma-s3: stage 3: stage 2, warp specialized (a TMA producer warpgroup, two
//              consumer warpgroups synchronized by full/empty mbarriers, no CTA-wide barriers)
//   version 0/wgmma-s4: stage 4: stage 3 with the two consumers' dQ partials summed in shared
//              memory (handed over on mbarriers), one reduce-add per tile
//   version 0/wgmma-s5: stage 5: stage 4 with a 3-stage Q/dO/lse2/D ring
//   version 0/wgmma-s6: stage 6: stage 5 with each tile's dQ partial handed on in the next tile,
//              while that tile's dV / dK products run
//   version 0/wgmma-s7: stage 7: stage 6 with dQ split by columns between the two consumers
//              (each multiplies all 128 keys' dS into its 32 columns and reduce-adds them itself)
//   version 0/wgmma-s8..s10: stages 8..10 (attention_backward_sm90_kernel's comment)
//   version 0/wgmma-s11: stage 11: stage 8's CTA on 128-query tiles (m64n128 S^T / dP^T, each
//              consumer's dQ product covers 64 query rows over all 128 keys)
//   version 0/wgmma-s12: stage 12: stage 11 with P^T's exponentials under the dP^T product
//   version 0/wgmma-s13: stage 13: stage 11 with dK issued with dV, before the consumers' barrier
//   version 0/wgmma-s14: stage 14: stages 12 and 13 together
//   version 0/wgmma-s15: stage 15: stage 13 with independent consumers (each reduce-adds the dQ
//              partial of its own 64 keys: two partials per 128-key block)
//   version 1: the naive baseline below: the forward is one thread per (b, h, query) walking
//              the keys with an online softmax; the backward is one thread per query row (D, dq)
//              and one thread per key row (dk, dv), all in fp32 on the CUDA cores
// Both are checked against the CPU reference (float math on the same bf16-rounded inputs) at
// awkward shapes (T = 1, 7, 17, 100, 200, 1030, 1100, 2048, 4096; H/KV = 8/4, 4/4, 8/2), with outputs
// poisoned with NaN first, then benchmarked at the seed shape (B=48, T=2048, H=8, KV=4, hd=64).
// Also: xsa_backward with accumulate = true (onto random dy, dv), its D for the attention
// backward (bit for bit the preprocess's), its version 2 against version 1 bit for bit (dy, dv,
// D; overwriting, accumulating, without D), the preprocess pass's versions against each other
// (check_preprocess), the training chain with dq = nullptr (dq untouched, dQ from the fp32
// accumulator) and with D from xsa_backward (AttnBwdPrepared), the dQ
// accumulators' double buffering (AttnBwdPrepared::dq_buf / dq_zero / zero_other: buffer 1, an
// accumulator zero already, the other one left zero, on the mma.sync kernel, stage 8 (zeroed by a
// memset) and the shipping stage (zeroed in the kernel)), dk/dv bitwise deterministic,
// and dq's run-to-run spread over 10 runs (fp32 partial sums in any order: at most one bf16
// step plus the fp32 reordering bound per element, see dq_spread; printed as
// "observed: attention_dq_spread[case] <max |diff| / max |dq|>" and "..._ratio[case] <diff/allowed>").
//
//   make build/dev_attention && build/dev_attention               # checks, then benchmarks
//   build/dev_attention --check-only | --bench-only
//   build/dev_attention --fwd-only                # only the forward kernels (checks and benchmarks)
//   build/dev_attention --fwd-only --stage N      # of the Hopper versions, only stage N (1..8 = v2..v9);
//                                                 # a kernel that faults (an mbarrier timeout) ends the process, so this isolates one
//   build/dev_attention --check-only --small      # only T <= 200 (quick, e.g. under compute-sanitizer)
//   build/dev_attention --sm90-stages 1,4         # only these stages of the sm90 backward (default all)
//
// Exits non-zero when any check fails.
#include "check.cuh"

#include "../common/attention.cuh"
#include "../common/model_cpu.h"

typedef __nv_bfloat16 bf16;
static const int HD = 64;

// ----------------------------------------------------------------------------
// version 1: naive kernels

// one thread per (b, h, t), t fastest so a warp's threads read the same key rows
__global__ void attention_forward_naive_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                                               int T, int H, int KV) {
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * H * T) return;
    const int t = (int)(idx % T), h = (int)(idx / T % H), b = (int)(idx / ((long)T * H));
    const int kh = h / (H / KV);
    // seek to q[b,t,h,:]
    const bf16 *qt = q + (((size_t)b * T + t) * H + h) * HD;
    float qv[HD], o[HD];
    for (int i = 0; i < HD; i++) {
        qv[i] = __bfloat162float(qt[i]) * 0.125f;
        o[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int s = 0; s <= t; s++) {
        const bf16 *ks = k + (((size_t)b * T + s) * KV + kh) * HD;
        const bf16 *vs = v + (((size_t)b * T + s) * KV + kh) * HD;
        float sc = 0.f;
        for (int i = 0; i < HD; i++) sc += qv[i] * __bfloat162float(ks[i]);
        const float mn = fmaxf(m, sc), alpha = expf(m - mn), p = expf(sc - mn);
        l = l * alpha + p;
        for (int i = 0; i < HD; i++) o[i] = o[i] * alpha + p * __bfloat162float(vs[i]);
        m = mn;
    }
    bf16 *ot = out + (((size_t)b * T + t) * H + h) * HD;
    for (int i = 0; i < HD; i++) ot[i] = __float2bfloat16(o[i] / l);
    lse[((size_t)b * H + h) * T + t] = m + logf(l);
}

// one thread per (b, h, t): D = dout . out, then dq = sum_s dS[t,s] k[s] / 8
__global__ void attention_backward_naive_dq_kernel(bf16 *dq, float *Dbuf, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                   const bf16 *v, const bf16 *out, const float *lse, int B, int T, int H,
                                                   int KV) {
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * H * T) return;
    const int t = (int)(idx % T), h = (int)(idx / T % H), b = (int)(idx / ((long)T * H));
    const int kh = h / (H / KV);
    const size_t row = (((size_t)b * T + t) * H + h) * HD;
    float D = 0.f;
    for (int i = 0; i < HD; i++) D += __bfloat162float(dout[row + i]) * __bfloat162float(out[row + i]);
    const size_t li = ((size_t)b * H + h) * T + t;
    Dbuf[li] = D;
    const float L = lse[li];
    float acc[HD];
    for (int i = 0; i < HD; i++) acc[i] = 0.f;
    for (int s = 0; s <= t; s++) {
        const size_t kr = (((size_t)b * T + s) * KV + kh) * HD;
        float sc = 0.f, dp = 0.f;
        for (int i = 0; i < HD; i++) {
            sc += __bfloat162float(q[row + i]) * __bfloat162float(k[kr + i]);
            dp += __bfloat162float(dout[row + i]) * __bfloat162float(v[kr + i]);
        }
        const float ds = expf(sc * 0.125f - L) * (dp - D);
        for (int i = 0; i < HD; i++) acc[i] += ds * __bfloat162float(k[kr + i]);
    }
    for (int i = 0; i < HD; i++) dq[row + i] = __float2bfloat16(acc[i] * 0.125f);
}

// one thread per (b, kh, s): dv = sum P dout, dk = sum dS q / 8 over the group's heads and t >= s
__global__ void attention_backward_naive_dkv_kernel(bf16 *dk, bf16 *dv, const float *Dbuf, const bf16 *dout, const bf16 *q,
                                                    const bf16 *k, const bf16 *v, const float *lse, int B, int T, int H,
                                                    int KV) {
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * KV * T) return;
    const int s = (int)(idx % T), kh = (int)(idx / T % KV), b = (int)(idx / ((long)T * KV));
    const int G = H / KV;
    const size_t kr = (((size_t)b * T + s) * KV + kh) * HD;
    float dka[HD], dva[HD];
    for (int i = 0; i < HD; i++) dka[i] = dva[i] = 0.f;
    for (int h = kh * G; h < (kh + 1) * G; h++) {
        for (int t = s; t < T; t++) {
            const size_t row = (((size_t)b * T + t) * H + h) * HD, li = ((size_t)b * H + h) * T + t;
            float sc = 0.f, dp = 0.f;
            for (int i = 0; i < HD; i++) {
                sc += __bfloat162float(q[row + i]) * __bfloat162float(k[kr + i]);
                dp += __bfloat162float(dout[row + i]) * __bfloat162float(v[kr + i]);
            }
            const float p = expf(sc * 0.125f - lse[li]), ds = p * (dp - Dbuf[li]);
            for (int i = 0; i < HD; i++) {
                dva[i] += p * __bfloat162float(dout[row + i]);
                dka[i] += ds * __bfloat162float(q[row + i]);
            }
        }
    }
    for (int i = 0; i < HD; i++) {
        dk[kr + i] = __float2bfloat16(dka[i] * 0.125f);
        dv[kr + i] = __float2bfloat16(dva[i]);
    }
}

void attention_forward_naive(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int H,
                             int KV) {
    const long n = (long)B * H * T;
    attention_forward_naive_kernel<<<ceil_div(n, 128), 128>>>(out, lse, q, k, v, B, T, H, KV);
    cudaCheckLaunch();
}
// Dbuf: (B, H, T) floats of scratch
void attention_backward_naive(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                              const bf16 *out, const float *lse, int B, int T, int H, int KV, float *Dbuf) {
    attention_backward_naive_dq_kernel<<<ceil_div((long)B * H * T, 128), 128>>>(dq, Dbuf, dout, q, k, v, out, lse, B, T, H,
                                                                                 KV);
    cudaCheckLaunch();
    attention_backward_naive_dkv_kernel<<<ceil_div((long)B * KV * T, 128), 128>>>(dk, dv, Dbuf, dout, q, k, v, lse, B, T,
                                                                                  H, KV);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// host helpers

static void round_bf16(std::vector<float> &x) {
    for (float &e : x) e = __bfloat162float(__float2bfloat16(e));
}
// (DevBuf: check.cuh)
static std::vector<float> download(const DevBuf<bf16> &b) {
    std::vector<float> h(b.n);
    from_device_bf16(h.data(), b.p, b.n);
    return h;
}
static std::vector<float> download(const DevBuf<float> &b) {
    std::vector<float> h(b.n);
    cudaCheck(cudaMemcpy(h.data(), b.p, b.n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
static void upload(DevBuf<bf16> &b, const std::vector<float> &h) { to_device_bf16(b.p, h.data(), b.n); }
static void upload(DevBuf<float> &b, const std::vector<float> &h) {
    cudaCheck(cudaMemcpy(b.p, h.data(), b.n * sizeof(float), cudaMemcpyHostToDevice));
}

// bf16 outputs. The flash kernels round P and dS to bf16 before their tensor-core products (as
// FlashAttention-2 does), so an output carries errors of ~2^-9 relative to the size of the terms
// it sums, not to its own value: an element whose terms nearly cancel can be off by more than 1%
// of itself (seen: a few elements per million at 1e-2 rel + 2e-2 rms). So the elementwise test is
// |got - ref| <= 1e-2 |ref| + 1e-2 max|ref| (NaN, garbage, wrong or missing rows fail it), and the
// aggregate relative L2 error must stay under 5e-3 (2.5 x 2^-9; a systematic error fails it; the
// observed values are ~2.3e-3 for the flash kernels and ~1.6e-3 for the fp32 naive ones, whose
// only rounding is that of the bf16 output).
static bool check_bf16(const std::string &name, const std::vector<float> &got, const std::vector<float> &ref) {
    double mx = 0, num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        mx = std::max(mx, (double)std::fabs(ref[i]));
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    bool ok = validate(name.c_str(), got.data(), ref.data(), ref.size(), 1e-2, 1e-2 * mx + 1e-6);
    // the reference's rms is floored at 1e-3: at T = 1, dq = dk = 0 and y - (y.vn)vn = 0 exactly,
    // and their fp32 rounding noise (~1e-7) must not count as a 100% error
    const double rel = std::sqrt(num / std::max(den, 1e-6 * (double)ref.size()));
    if (ok && !(rel <= 5e-3)) {
        printf("  FAIL %-28s relative L2 error %.3g > 5e-3\n", name.c_str(), rel);
        ok = false;
    }
    return ok;
}
static bool check_f32(const std::string &name, const std::vector<float> &got, const std::vector<float> &ref, double rtol,
                      double atol) {
    return validate(name.c_str(), got.data(), ref.data(), ref.size(), rtol, atol);
}

// ----------------------------------------------------------------------------
// one check case

struct Case {
    int B, T, H, KV;
    float qk_std;  // std of q and k: 1 gives scores of std 1; larger makes the softmax peaky
    bool chain;    // also run xsa_backward -> attention_backward(accumulate) against the CPU chain
};

// the Hopper forwards v2..v9 are attention_forward_wgmma's stages 1..8; the Hopper backwards
// v0/wgmma, v0/wgmma-s2..s15 are attention_backward_sm90's stages 1..15
enum Version { V_SHIP = 0, V_SHIP_KW4 = 2, V_NAIVE = 1, V_WGMMA = 3, V_WGMMA_WS = 4, V_WGMMA_PIPE = 5, V_WGMMA_128 = 6,
               V_PINGPONG = 7, V_POLY8 = 8, V_POLY4 = 9, V_PERSISTENT = 10,
               V_PERSISTENT_3CTA = 11,  // v9 in a grid of 3 CTAs (checks only)
               V_BWD90 = 12, V_BWD90_S2, V_BWD90_S3, V_BWD90_S4, V_BWD90_S5, V_BWD90_S6, V_BWD90_S7,
               V_BWD90_S8, V_BWD90_S9, V_BWD90_S10, V_BWD90_S11, V_BWD90_S12, V_BWD90_S13, V_BWD90_S14, V_BWD90_S15 };
static int hopper_stage(int v) {
    return v == V_PERSISTENT_3CTA ? V_PERSISTENT - V_WGMMA + 1 : v >= V_WGMMA && v <= V_PERSISTENT ? v - V_WGMMA + 1 : 0;
}
static bool is_sm90(int v) { return v >= V_BWD90 && v <= V_BWD90_S15; }  // a Hopper backward
static int sm90_stage(int v) { return is_sm90(v) ? v - V_BWD90 + 1 : 0; }
static const char *version_name(int v) {
    static const char *hopper[] = {"", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"};
    static const char *bwd90[] = {"", "v0/wgmma", "v0/wgmma-s2", "v0/wgmma-s3", "v0/wgmma-s4",
                                  "v0/wgmma-s5", "v0/wgmma-s6", "v0/wgmma-s7", "v0/wgmma-s8",
                                  "v0/wgmma-s9", "v0/wgmma-s10", "v0/wgmma-s11", "v0/wgmma-s12",
                                  "v0/wgmma-s13", "v0/wgmma-s14", "v0/wgmma-s15"};
    return v == V_SHIP ? "v0" : v == V_SHIP_KW4 ? "v0/kw4" : v == V_PERSISTENT_3CTA ? "v9/3cta"
         : hopper_stage(v) ? hopper[hopper_stage(v)] : is_sm90(v) ? bwd90[sm90_stage(v)] : "v1";
}
static bool g_fwd_only = false;       // --fwd-only
static int g_stage = 0;               // --stage N: only this Hopper forward stage (0: all)
static unsigned g_sm90_stages = ~0u;  // bit s: check and bench sm90 backward stage s (--sm90-stages)
// why an sm90 backward version does not run here (nullptr: it runs)
static const char *sm90_skip_reason(int v) {
    if (!is_sm90(v)) return nullptr;
    if (!sm90_available()) return "no sm_90a kernel on this device/build";
    if (!(g_sm90_stages >> sm90_stage(v) & 1)) return "not in --sm90-stages";
    return nullptr;
}
// dq partials per 128-key block: one, or one per warpgroup where each reduces its own (stages 2, 3)
static int dq_parts_per_block(int v) { return v == V_BWD90_S2 || v == V_BWD90_S3 || v == V_BWD90_S15 ? 2 : 1; }
static int g_skipped = 0;  // checks not run (no sm_90a kernel here, or left out by --stage / --sm90-stages),
                           // reported in the closing line

// dq is summed in fp32 over the key blocks (atomics or bulk reduce-adds), in whatever order
// they land: run to run the sum of an element's partials is reordered. Reordering n fp32
// addends moves the sum by at most 2 (n - 1) 2^-24 sum|addends| (each order is within
// (n - 1) 2^-24 sum|addends| of the exact sum), and rounding to bf16 adds at most one bf16 step
// (2^-7 of the magnitude at worst). When the partials cancel (|dq| much smaller than
// sum|partials|) the reordering term dominates, so a fixed "one bf16 step" limit is wrong.
// The partials of dq[i, d] sum to scale * sum_j dS_ij K_jd, so sum|addends| <= scale * sum_j
// |dS_ij K_jd| =: A[i, d] (computed here from the CPU reference's P and dP; the GPU's dS is
// bf16-rounded and within ~1% of the reference's, hence the factor 1.1 below). So per element:
//   allowed = 2^-7 max(|run 0|, |run r|) + 1.1 * 2 (n_i - 1) 2^-24 A[i, d]
// with n_i the number of partials of row i: one per 128-key block at or below the row for the
// mma.sync kernel and the sm90 S1 kernel, one per 64-key warpgroup block for sm90 S2 (each
// warpgroup reduces its own). A lost or doubled partial moves an element by about A / n_i,
// ~10^5 times the allowance: a race still fails. Over DQ_RUNS runs; prints the worst
// observed / allowed ratio (<= 1 passes) and the spread (max |diff| / max |dq|) for the record.
constexpr int DQ_RUNS = 10;
constexpr int DQ_KEY_BLOCK = 128;  // keys per partial: attn::BWD_BC (mma.sync) and attn::H_BC (sm90 S1)
static_assert(attn::BWD_BC == DQ_KEY_BLOCK && attn::H_BC == DQ_KEY_BLOCK, "dq_spread's partial count assumes 128-key blocks");

// A[b, t, h, d] = scale * sum_{s <= t} |dS_ts K_sd| (layout of q), from the reference's inputs,
// out and lse: the fp32 reordering bound of dq's partial sums, before the partial count
static std::vector<double> dq_abs_sum_cpu(const std::vector<float> &q, const std::vector<float> &k,
                                          const std::vector<float> &v, const std::vector<float> &dout,
                                          const std::vector<float> &out, const std::vector<float> &lse, int B, int T,
                                          int H, int KV) {
    std::vector<double> A((size_t)B * T * H * HD, 0.0);
    const int group = H / KV;
#pragma omp parallel for collapse(3) schedule(dynamic, 16)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const size_t qi = (((size_t)b * T + t) * H + h) * HD;
                const float l = lse[((size_t)b * H + h) * T + t];
                double Dt = 0;
                for (int i = 0; i < HD; i++) Dt += (double)dout[qi + i] * out[qi + i];
                double *a = A.data() + qi;
                for (int s = 0; s <= t; s++) {
                    const size_t ki = (((size_t)b * T + s) * KV + h / group) * HD;
                    double sc = 0, dp = 0;
                    for (int i = 0; i < HD; i++) {
                        sc += (double)q[qi + i] * k[ki + i];
                        dp += (double)dout[qi + i] * v[ki + i];
                    }
                    const double ds = std::fabs(std::exp(sc * 0.125 - l) * (dp - Dt)) * 0.125;
                    for (int i = 0; i < HD; i++) a[i] += ds * std::fabs((double)k[ki + i]);
                }
            }
    return A;
}

// parts_per_block: dq partials per 128-key block (1, or 2 when each warpgroup adds its own)
template <typename Fn>
static bool dq_spread(DevBuf<bf16> &d_dq, Fn run, const std::vector<double> &A, int T, int H, int parts_per_block,
                      const char *tag, const char *vn) {
    run();
    cudaCheck(cudaDeviceSynchronize());
    const std::vector<float> first = download(d_dq);
    double mx = 0, worst = 0, worst_ratio = 0;
    size_t differ = 0;
    for (float v : first) mx = std::max(mx, (double)std::fabs(v));
    for (int r = 1; r < DQ_RUNS; r++) {
        run();
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<float> got = download(d_dq);
        for (size_t i = 0; i < got.size(); i++) {
            const double d = std::fabs((double)got[i] - first[i]);
            if (d > 0 || !std::isfinite(got[i])) differ++;
            worst = std::max(worst, d);
            const int t = (int)(i / ((size_t)H * HD) % T), n = parts_per_block * (t / DQ_KEY_BLOCK + 1);
            const double allowed = std::ldexp(1.0, -7) * std::max(std::fabs((double)got[i]), std::fabs((double)first[i])) +
                                   1.1 * 2 * (n - 1) * std::ldexp(A[i], -24);
            const double ratio = !std::isfinite(got[i]) ? INFINITY : d == 0 ? 0 : allowed > 0 ? d / allowed : INFINITY;
            worst_ratio = std::max(worst_ratio, ratio);
        }
    }
    const bool ok = worst_ratio <= 1.0;
    printf("  %-4s %-28s %d runs: max |diff| %.3g (%.2e of max |dq|), %zu element-runs differ, worst diff/allowed %.3f "
           "(<= 1; allowed = 1 bf16 step + fp32 reordering bound)\n",
           ok ? "ok" : "FAIL", (std::string(vn) + "bwd dq run-to-run spread").c_str(), DQ_RUNS, worst,
           worst / std::max(mx, 1e-300), differ, worst_ratio);
    printf("observed: attention_dq_spread[%s] %.3e\n", tag, worst / std::max(mx, 1e-300));
    printf("observed: attention_dq_spread_ratio[%s] %.3e\n", tag, worst_ratio);
    return ok;
}

static bool run_case(const Case &c) {
    const int B = c.B, T = c.T, H = c.H, KV = c.KV, N = B * T;
    const size_t nq = (size_t)N * H * HD, nkv = (size_t)N * KV * HD, nl = (size_t)B * H * T;
    char tag[96];
    snprintf(tag, sizeof tag, "B=%d T=%d H=%d KV=%d%s", B, T, H, KV, c.qk_std != 1.f ? " peaky" : "");
    printf("case %s\n", tag);
    bool ok = true;

    // inputs, rounded to bf16 so the CPU sees exactly what the GPU sees
    std::vector<float> q(nq), k(nkv), v(nkv), dout(nq);
    fill_normal(q, c.qk_std);
    fill_normal(k, c.qk_std);
    fill_normal(v);
    fill_normal(dout);
    if (T > 3)  // one zero value row: XSA's clamped-norm path (and a harmless value for attention)
        for (int i = 0; i < HD; i++) v[((size_t)3 * KV + 0) * HD + i] = 0.f;
    round_bf16(q);
    round_bf16(k);
    round_bf16(v);
    round_bf16(dout);

    // CPU reference: forward, then the backward from the bf16-rounded reference output (the
    // GPU backward gets the same out and lse, so its check does not depend on the forward's)
    std::vector<float> out_ref(nq), lse_ref(nl);
    attention_forward_cpu(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), B, T, H, KV, HD);
    std::vector<float> out_b = out_ref;
    round_bf16(out_b);
    std::vector<float> dq_ref(nq, 0.f), dk_ref(nkv, 0.f), dv_ref(nkv, 0.f);
    attention_backward_cpu(dq_ref.data(), dk_ref.data(), dv_ref.data(), dout.data(), q.data(), k.data(), v.data(),
                           out_b.data(), lse_ref.data(), B, T, H, KV, HD);

    DevBuf<bf16> d_q(nq), d_k(nkv), d_v(nkv), d_dout(nq), d_outb(nq), d_out(nq), d_dq(nq), d_dk(nkv), d_dv(nkv);
    DevBuf<float> d_lse_ref(nl), d_lse(nl), d_scratch(attention_backward_scratch_floats(B, T, H, HD));
    upload(d_q, q);
    upload(d_k, k);
    upload(d_v, v);
    upload(d_dout, dout);
    upload(d_outb, out_b);
    upload(d_lse_ref, lse_ref);

    // the bound of dq's fp32 reordering (for the run-to-run spread checks)
    const std::vector<double> dq_abs = g_fwd_only ? std::vector<double>() : dq_abs_sum_cpu(q, k, v, dout, out_b, lse_ref, B, T, H, KV);

    for (int ver : {V_SHIP, V_SHIP_KW4, V_WGMMA, V_WGMMA_WS, V_WGMMA_PIPE, V_WGMMA_128, V_PINGPONG, V_POLY8, V_POLY4, V_PERSISTENT,
                    V_PERSISTENT_3CTA, V_BWD90, V_BWD90_S2, V_BWD90_S3, V_BWD90_S4, V_BWD90_S5, V_BWD90_S6, V_BWD90_S7, V_BWD90_S8,
                    V_BWD90_S9, V_BWD90_S10, V_BWD90_S11, V_BWD90_S12, V_BWD90_S13, V_BWD90_S14, V_BWD90_S15, V_NAIVE}) {
        const bool hopper = hopper_stage(ver) > 0;
        const std::string vn = std::string(version_name(ver)) + " ";
        if ((ver == V_SHIP_KW4 || is_sm90(ver)) && g_fwd_only) continue;
        if (hopper && g_stage && hopper_stage(ver) != g_stage) {
            g_skipped += 2;  // out and lse, left out by --stage
            continue;
        }
        if (hopper && !sm90_available()) {
            printf("  skip %-28s (needs an sm_90 GPU and an sm_90a build)\n", (vn + "fwd out, lse").c_str());
            g_skipped += 2;
            continue;
        }
        if (const char *why = sm90_skip_reason(ver)) {
            printf("  skip %-28s %s\n", (vn + "bwd").c_str(), why);
            g_skipped++;
            continue;
        }
        if (ver == V_SHIP || ver == V_NAIVE || hopper) {  // the kw4 and sm90 variants differ in the backward only
            poison(d_out.p, nq);
            poison(d_lse.p, nl);
            if (ver == V_SHIP) attention_forward_mma(d_out.p, d_lse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV, HD, 0);
            else if (hopper)
                attention_forward_wgmma(d_out.p, d_lse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV, HD, 0, hopper_stage(ver),
                                        ver == V_PERSISTENT_3CTA ? 3 : 0);
            else attention_forward_naive(d_out.p, d_lse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV);
            cudaCheck(cudaDeviceSynchronize());
            const std::vector<float> out_full = download(d_out), lse_full = download(d_lse);
            ok &= check_bf16(vn + "fwd out", out_full, out_ref);
            ok &= check_f32(vn + "fwd lse", lse_full, lse_ref, 1e-3, 1e-3);
            if (hopper && ver != V_PERSISTENT_3CTA && hopper_stage(ver) < ATTN_FWD_HOPPER_STAGES) {
                // q_from (the sliding eval's last block): from poisoned buffers, the rows t >= q_from
                // of out and lse must be the full call's bit for bit (NaN poison never matches)
                for (int qf : {1, T / 2, T - 1}) {
                    if (qf <= 0 || qf >= T) continue;
                    poison(d_out.p, nq);
                    poison(d_lse.p, nl);
                    attention_forward_wgmma(d_out.p, d_lse.p, d_q.p, d_k.p, d_v.p, B, T, H, KV, HD, 0, hopper_stage(ver), 0, qf);
                    cudaCheck(cudaDeviceSynchronize());
                    const std::vector<float> o = download(d_out), l = download(d_lse);
                    long differ = 0;
                    for (int b = 0; b < B; b++)
                        for (int t = qf; t < T; t++)
                            for (int h = 0; h < H; h++) {
                                const size_t r = ((size_t)b * T + t) * H + h, li = ((size_t)b * H + h) * T + t;
                                differ += memcmp(&o[r * HD], &out_full[r * HD], HD * sizeof(float)) != 0;
                                differ += memcmp(&l[li], &lse_full[li], sizeof(float)) != 0;
                            }
                    char nm[96];
                    snprintf(nm, sizeof nm, "%sfwd q_from=%d", vn.c_str(), qf);
                    printf("  %-4s %-28s rows t >= q_from: %ld of out/lse differ from the full call\n", differ ? "FAIL" : "ok", nm,
                           differ);
                    ok &= differ == 0;
                }
            }
        }
        if (hopper || g_fwd_only) continue;  // v2..v9: the forward only
        poison(d_dq.p, nq);
        poison(d_dk.p, nkv);
        poison(d_dv.p, nkv);
        // the version's backward, and the same again (for the determinism and spread checks)
        auto backward = [&](int v_) {
            if (v_ == V_SHIP)
                attention_backward_mma(d_dq.p, d_dk.p, d_dv.p, d_dout.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H,
                                       KV, HD, d_scratch.p, false, 0);
            else
                attention_backward_sm90(d_dq.p, d_dk.p, d_dv.p, d_dout.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H,
                                        KV, HD, d_scratch.p, false, 0, sm90_stage(v_));
        };
        if (ver == V_SHIP || is_sm90(ver))
            backward(ver);
        else if (ver == V_SHIP_KW4)
            attention_backward_mma<4>(d_dq.p, d_dk.p, d_dv.p, d_dout.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H, KV,
                                  HD, d_scratch.p, false, 0);
        else
            attention_backward_naive(d_dq.p, d_dk.p, d_dv.p, d_dout.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H,
                                     KV, d_scratch.p);
        cudaCheck(cudaDeviceSynchronize());
        ok &= check_bf16(vn + "bwd dq", download(d_dq), dq_ref);
        ok &= check_bf16(vn + "bwd dk", download(d_dk), dk_ref);
        ok &= check_bf16(vn + "bwd dv", download(d_dv), dv_ref);
        if (ver == V_SHIP || is_sm90(ver)) {
            // dk and dv have one writer per element: a second run must match bit for bit
            std::vector<float> dk1 = download(d_dk), dv1 = download(d_dv);
            backward(ver);
            const bool same = download(d_dk) == dk1 && download(d_dv) == dv1;
            printf("  %-4s %-28s %s\n", same ? "ok" : "FAIL", (vn + "bwd dk/dv deterministic").c_str(),
                   same ? "bitwise equal" : "differ");
            ok &= same;
            ok &= dq_spread(d_dq, [&] { backward(ver); }, dq_abs, T, H, dq_parts_per_block(ver),
                            (std::string(tag) + (ver == V_SHIP ? "" : " ") + (ver == V_SHIP ? "" : version_name(ver))).c_str(),
                            vn.c_str());
        }
    }
    if (g_fwd_only) return ok;

    // XSA on y = the (bf16) attention output, the same v (with its zero row)
    std::vector<float> xo_ref(nq), vnorm_ref((size_t)N * KV);
    xsa_forward_cpu(xo_ref.data(), vnorm_ref.data(), out_b.data(), v.data(), N, H, KV, HD);
    DevBuf<bf16> d_xo(nq), d_dy(nq), d_dvx(nkv);
    DevBuf<float> d_vnorm((size_t)N * KV), d_vnorm_ref((size_t)N * KV);
    poison(d_xo.p, nq);
    poison(d_vnorm.p, d_vnorm.n);
    xsa_forward(d_xo.p, d_vnorm.p, d_outb.p, d_v.p, N, H, KV, HD, 0);
    cudaCheck(cudaDeviceSynchronize());
    ok &= check_bf16("xsa fwd out", download(d_xo), xo_ref);
    ok &= check_f32("xsa fwd vnorm", download(d_vnorm), vnorm_ref, 1e-5, 1e-6);
    std::vector<float> dy_ref(nq, 0.f), dvx_ref(nkv, 0.f);
    xsa_backward_cpu(dy_ref.data(), dvx_ref.data(), dout.data(), out_b.data(), v.data(), vnorm_ref.data(), N, H, KV, HD);
    upload(d_vnorm_ref, vnorm_ref);
    poison(d_dy.p, nq);
    poison(d_dvx.p, nkv);
    xsa_backward(d_dy.p, d_dvx.p, d_dout.p, d_outb.p, d_v.p, d_vnorm_ref.p, N, H, KV, HD, false, 0);
    cudaCheck(cudaDeviceSynchronize());
    ok &= check_bf16("xsa bwd dy", download(d_dy), dy_ref);
    ok &= check_bf16("xsa bwd dv", download(d_dvx), dvx_ref);
    {
        // xsa_backward's D (attention's rowsum(dy * y), for AttnBwdPrepared::D): bit for bit what
        // the preprocess pass computes from the dy stored; dy and dv unchanged by asking for it
        const std::vector<float> dy_plain = download(d_dy), dv_plain = download(d_dvx);
        DevBuf<float> d_Dx(nl), d_Dp(nl), d_l2(nl), d_acc(nq);
        poison(d_Dx.p, nl);
        poison(d_Dp.p, nl);
        poison(d_dy.p, nq);
        poison(d_dvx.p, nkv);
        xsa_backward(d_dy.p, d_dvx.p, d_dout.p, d_outb.p, d_v.p, d_vnorm_ref.p, N, H, KV, HD, false, 0, d_Dx.p, T);
        attention_backward_preprocess_run(d_Dp.p, d_l2.p, d_acc.p, d_dy.p, d_outb.p, d_lse_ref.p, B, T, H, 0);
        cudaCheck(cudaDeviceSynchronize());
        const bool same_g = download(d_dy) == dy_plain && download(d_dvx) == dv_plain;
        const std::vector<float> Dx = host_f32(d_Dx.p, nl), Dp = host_f32(d_Dp.p, nl);
        const bool same_d = memcmp(Dx.data(), Dp.data(), nl * sizeof(float)) == 0;
        printf("  %-4s %-28s %s\n", same_g && same_d ? "ok" : "FAIL", "xsa bwd D = preprocess D",
               !same_g ? "dy/dv changed" : same_d ? "bitwise equal" : "differ");
        ok &= same_g && same_d;
    }
    {
        // xsa_backward version 2 against version 1 bit for bit: dy, dv and D, overwriting (with and
        // without D) and accumulating onto random dy, dv; outputs poisoned first (the overwrite runs)
        std::vector<float> dy0(nq), dv0(nkv);
        fill_normal(dy0, 0.5f);
        fill_normal(dv0, 0.5f);
        round_bf16(dy0);
        round_bf16(dv0);
        DevBuf<float> d_Dx(nl);
        for (int run = 0; run < 3; run++) {
            const bool accum = run == 1, withD = run < 2;
            std::vector<float> got[3][3];  // [version][dy, dv, D]
            for (int xv = 1; xv <= 2; xv++) {
                if (accum) {
                    upload(d_dy, dy0);
                    upload(d_dvx, dv0);
                } else {
                    poison(d_dy.p, nq);
                    poison(d_dvx.p, nkv);
                }
                poison(d_Dx.p, nl);
                xsa_backward(d_dy.p, d_dvx.p, d_dout.p, d_outb.p, d_v.p, d_vnorm_ref.p, N, H, KV, HD, accum, 0,
                             withD ? d_Dx.p : nullptr, T, xv);
                cudaCheck(cudaDeviceSynchronize());
                got[xv][0] = host_bf16(d_dy.p, nq), got[xv][1] = host_bf16(d_dvx.p, nkv), got[xv][2] = host_f32(d_Dx.p, nl);
            }
            size_t differ[3] = {0, 0, 0};
            for (int k = 0; k < 3; k++)
                for (size_t i = 0; i < got[1][k].size(); i++)
                    differ[k] += memcmp(&got[1][k][i], &got[2][k][i], sizeof(float)) != 0;
            const bool same = differ[0] + differ[1] + differ[2] == 0;
            static const char *names[] = {"xsa bwd v2 = v1 (dy dv D)", "xsa bwd v2 = v1 (accumulate)", "xsa bwd v2 = v1 (no D)"};
            printf("  %-4s %-28s %s (differ: dy %zu, dv %zu, D %zu%s)\n", same ? "ok" : "FAIL", names[run],
                   same ? "bitwise equal" : "differ", differ[0], differ[1], differ[2], withD ? "" : ", D not asked for");
            ok &= same;
        }
    }
    {
        // accumulate = true adds onto what dy and dv hold (the CPU twin always adds): start both
        // from random bf16 values of the gradients' size, so an overwrite is off by 100%
        std::vector<float> dy0(nq), dv0(nkv);
        fill_normal(dy0, 0.5f);
        fill_normal(dv0, 0.5f);
        round_bf16(dy0);
        round_bf16(dv0);
        std::vector<float> ady = dy0, adv = dv0;
        xsa_backward_cpu(ady.data(), adv.data(), dout.data(), out_b.data(), v.data(), vnorm_ref.data(), N, H, KV, HD);
        upload(d_dy, dy0);
        upload(d_dvx, dv0);
        xsa_backward(d_dy.p, d_dvx.p, d_dout.p, d_outb.p, d_v.p, d_vnorm_ref.p, N, H, KV, HD, true, 0);
        cudaCheck(cudaDeviceSynchronize());
        ok &= check_bf16("xsa bwd dy (accumulate)", download(d_dy), ady);
        ok &= check_bf16("xsa bwd dv (accumulate)", download(d_dvx), adv);
    }

    if (c.chain) {
        // the training order: dv <- xsa_backward (overwrite), then attention_backward adds its
        // dq, dk, dv (accumulate) onto dq, dk that already hold something
        std::vector<float> dq0(nq), dk0(nkv);
        fill_normal(dq0, 0.1f);
        fill_normal(dk0, 0.1f);
        round_bf16(dq0);
        round_bf16(dk0);
        std::vector<float> cdq = dq0, cdk = dk0, cdv(nkv, 0.f), cdy(nq, 0.f);
        xsa_backward_cpu(cdy.data(), cdv.data(), dout.data(), out_b.data(), v.data(), vnorm_ref.data(), N, H, KV, HD);
        round_bf16(cdy);  // the GPU hands attention a bf16 datt
        attention_backward_cpu(cdq.data(), cdk.data(), cdv.data(), cdy.data(), q.data(), k.data(), v.data(), out_b.data(),
                               lse_ref.data(), B, T, H, KV, HD);
        // One run of the chain on backward `ver`: dq, dk start at dq0, dk0, dv and dy poisoned, then
        // xsa_backward (overwrite) and the attention backward (accumulate). dq_null: dQ left in
        // the accumulator; prepared: D from xsa_backward (AttnBwdPrepared::D, the scratch poisoned
        // first so the preprocess's D cannot stand in). acc: the dQ accumulators' flags
        // (AttnBwdPrepared::dq_buf, dq_zero, zero_other); with dq_zero the whole scratch is
        // poisoned and only accumulator dq_buf zeroed here (so neither the other accumulator nor
        // a stale D / lse2 can stand in), and with zero_other the other accumulator is poisoned
        // first. Returns the check's label prefix, or "" (counted as a skip) where the sm90
        // kernels cannot run.
        auto chain = [&](int ver, const char *what, bool dq_null, bool prepared,
                         AttnBwdPrepared acc = AttnBwdPrepared()) -> std::string {
            const std::string vn = std::string(version_name(ver)) + " chain" + what;
            if (const char *why = sm90_skip_reason(ver)) {
                printf("  skip %-28s %s\n", vn.c_str(), why);
                g_skipped++;
                return "";
            }
            upload(d_dq, dq0);
            upload(d_dk, dk0);
            poison(d_dv.p, nkv);
            poison(d_dy.p, nq);
            if (prepared || acc.dq_zero) poison(d_scratch.p, d_scratch.n);
            if (acc.dq_zero)
                cudaCheck(cudaMemset(attention_backward_dq_acc(d_scratch.p, B, T, H, HD, acc.dq_buf), 0, nq * sizeof(float)));
            if (acc.zero_other) poison(attention_backward_dq_acc(d_scratch.p, B, T, H, HD, 1 - acc.dq_buf), nq);
            xsa_backward(d_dy.p, d_dv.p, d_dout.p, d_outb.p, d_v.p, d_vnorm_ref.p, N, H, KV, HD, false, 0,
                         prepared ? attention_backward_D(d_scratch.p, B, T, H, HD) : nullptr, T);
            AttnBwdPrepared prep = acc;
            prep.D = prepared;
            bf16 *dq = dq_null ? nullptr : d_dq.p;
            if (ver == V_SHIP)
                attention_backward_mma(dq, d_dk.p, d_dv.p, d_dy.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H, KV, HD,
                                       d_scratch.p, true, 0, prep);
            else
                attention_backward_sm90(dq, d_dk.p, d_dv.p, d_dy.p, d_q.p, d_k.p, d_v.p, d_outb.p, d_lse_ref.p, B, T, H, KV,
                                        HD, d_scratch.p, true, 0, sm90_stage(ver), prep);
            cudaCheck(cudaDeviceSynchronize());
            return vn + " ";
        };
        // both backward kernels (where the sm90 one exists: attention_backward runs it there)
        for (int ver : {V_SHIP, V_BWD90, V_BWD90_S2, V_BWD90_S3, V_BWD90_S4, V_BWD90_S5, V_BWD90_S6, V_BWD90_S7, V_BWD90_S8,
                        V_BWD90_S9, V_BWD90_S10, V_BWD90_S11, V_BWD90_S12, V_BWD90_S13, V_BWD90_S14, V_BWD90_S15}) {
            const std::string vn = chain(ver, "", false, false);
            if (vn.empty()) continue;
            ok &= check_bf16(vn + "dq (accumulate)", download(d_dq), cdq);
            ok &= check_bf16(vn + "dk (accumulate)", download(d_dk), cdk);
            ok &= check_bf16(vn + "dv (xsa + attn)", download(d_dv), cdv);
        }
        // dq = nullptr (the caller takes dQ from the fp32 accumulator, attention_backward_dq_acc):
        // dq is left alone, dk and dv still accumulate, and the accumulator times
        // attention_backward_dq_acc_scale() is dQ (converted here by the shipping dq pass, added
        // onto dq0)
        for (int ver : {V_SHIP, V_BWD90_S8}) {
            const std::string vn = chain(ver, " dq=null", true, false);
            if (vn.empty()) continue;
            const bool untouched = download(d_dq) == dq0;  // dq0 is bf16 already
            printf("  %-4s %-28s %s\n", untouched ? "ok" : "FAIL", (vn + "dq untouched").c_str(),
                   untouched ? "bitwise equal" : "differ");
            ok &= untouched;
            ok &= check_bf16(vn + "dk (accumulate)", download(d_dk), cdk);
            ok &= check_bf16(vn + "dv (xsa + attn)", download(d_dv), cdv);
            if (attention_backward_dq_acc_scale() != 0.125f) {
                printf("  FAIL %-28s %g, not 1/sqrt(64)\n", (vn + "dq acc scale").c_str(), attention_backward_dq_acc_scale());
                ok = false;
            }
            attention_backward_dq_convert(d_dq.p, attention_backward_dq_acc(d_scratch.p, B, T, H, HD, 0), B, T, H, HD, true, 0);
            cudaCheck(cudaDeviceSynchronize());
            ok &= check_bf16(vn + "dq from acc (accumulate)", download(d_dq), cdq);
        }
        // the training path (model_gpu.cuh): D from xsa_backward (AttnBwdPrepared::D), so the
        // preprocess pass does not compute it: the same gradients
        for (int ver : {V_SHIP, V_BWD90_S8}) {
            const std::string vn = chain(ver, " prepared", false, true);
            if (vn.empty()) continue;
            ok &= check_bf16(vn + "dq (accumulate)", download(d_dq), cdq);
            ok &= check_bf16(vn + "dk (accumulate)", download(d_dk), cdk);
            ok &= check_bf16(vn + "dv (xsa + attn)", download(d_dv), cdv);
        }
        // The dQ accumulators' double buffering (the training backward alternates them by layer):
        // on the mma.sync kernel, stage 8 (zero_other by a memset after the kernel) and the
        // shipping Hopper stage (zero_other by the producer warp in the kernel, stages 11..15), three
        // runs each:
        //   "zo b0":          buffer 0 zeroed by the preprocess, asked to zero buffer 1;
        //   "dqz zo b1":      buffer 1 zero already (the preprocess must not be needed), asked to
        //                     zero buffer 0, D from xsa_backward (the training path);
        //   "dqz b1 dq=null": buffer 1 zero already, dQ read from it by the caller, buffer 0
        //                     left alone (still poisoned).
        // dq, dk, dv as the CPU chain's; the other buffer all zero (count of NaN or nonzero
        // floats: the poison shows as NaN), or untouched.
        static_assert(ATTN_BWD_SM90_STAGE >= attn::Q128_FIRST, "the shipping stage is meant to zero in the kernel: check a q128 stage");
        const int v_ship90 = V_BWD90 + ATTN_BWD_SM90_STAGE - 1;
        auto other_acc = [&](int buf) { return host_f32(attention_backward_dq_acc(d_scratch.p, B, T, H, HD, 1 - buf), nq); };
        for (int ver : {(int)V_SHIP, (int)V_BWD90_S8, v_ship90}) {
            for (int run = 0; run < 3; run++) {
                AttnBwdPrepared acc;
                acc.dq_buf = run == 0 ? 0 : 1;
                acc.dq_zero = run > 0;
                acc.zero_other = run < 2;
                const bool dq_null = run == 2;
                const std::string vn = chain(ver, run == 0 ? " zo b0" : run == 1 ? " dqz zo b1" : " dqz b1 dq=null", dq_null,
                                             run == 1, acc);
                if (vn.empty()) continue;
                if (dq_null) {
                    const bool untouched = download(d_dq) == dq0;
                    printf("  %-4s %-28s %s\n", untouched ? "ok" : "FAIL", (vn + "dq untouched").c_str(),
                           untouched ? "bitwise equal" : "differ");
                    ok &= untouched;
                    attention_backward_dq_convert(d_dq.p, attention_backward_dq_acc(d_scratch.p, B, T, H, HD, acc.dq_buf), B, T,
                                                  H, HD, true, 0);
                    cudaCheck(cudaDeviceSynchronize());
                    ok &= check_bf16(vn + "dq from acc (accumulate)", download(d_dq), cdq);
                } else {
                    ok &= check_bf16(vn + "dq (accumulate)", download(d_dq), cdq);
                }
                ok &= check_bf16(vn + "dk (accumulate)", download(d_dk), cdk);
                ok &= check_bf16(vn + "dv (xsa + attn)", download(d_dv), cdv);
                const std::vector<float> other = other_acc(acc.dq_buf);
                size_t bad = 0;
                if (acc.zero_other) {
                    for (float x : other) bad += !(x == 0.f);  // NaN (the poison) or nonzero
                    printf("  %-4s %-28s %zu of %zu floats NaN or nonzero\n", bad ? "FAIL" : "ok",
                           (vn + "other acc zero").c_str(), bad, other.size());
                } else {
                    for (float x : other) bad += !std::isnan(x);
                    printf("  %-4s %-28s %zu of %zu floats written\n", bad ? "FAIL" : "ok",
                           (vn + "other acc untouched").c_str(), bad, other.size());
                }
                ok &= bad == 0;
            }
        }
        // k's per-head RMSNorm + RoPE backward in the epilogue (AttnBwdPrepared::k_rstd, stages
        // 11..15, the training path: D from xsa_backward, accumulating): dk is overwritten (dk0 must
        // not show) with the gradient of c_k's output. Reference: the CPU chain's attention-only dk
        // through qk_norm_rope_gain_backward_cpu from out (k read as the forward's out RoPE(xn),
        // xn = RoPE^T(k) by qk_xn_from_out_cpu; no gain), 1/rms drawn in [0.5, 2), the RoPE tables
        // of ROPE_DIMS 16 at this T. dq and dv as the plain chain's.
        {
            constexpr int rd = 16;
            std::vector<float> cs((size_t)T * rd / 2), sn((size_t)T * rd / 2), rk((size_t)N * KV);
            rope_tables_cpu(cs.data(), sn.data(), T, rd, 10000.0);
            std::uniform_real_distribution<float> u(0.5f, 2.f);
            for (float &r : rk) r = u(dev_rng());
            std::vector<float> zq(nq, 0.f), dk_attn(nkv, 0.f), zv(nkv, 0.f), xn_k(nkv), knorm_ref(nkv, 0.f);
            attention_backward_cpu(zq.data(), dk_attn.data(), zv.data(), cdy.data(), q.data(), k.data(), v.data(), out_b.data(),
                                   lse_ref.data(), B, T, H, KV, HD);
            qk_xn_from_out_cpu(xn_k.data(), k.data(), cs.data(), sn.data(), (const float *)nullptr, B, T, KV, HD, rd);
            qk_norm_rope_gain_backward_cpu(knorm_ref.data(), (float *)nullptr, dk_attn.data(), xn_k.data(), rk.data(), cs.data(),
                                           sn.data(), (const float *)nullptr, B, T, KV, HD, rd);
            DevBuf<float> d_cs(cs.size()), d_sn(sn.size()), d_rk(rk.size());
            upload(d_cs, cs);
            upload(d_sn, sn);
            upload(d_rk, rk);
            for (int ver : {V_BWD90_S11, V_BWD90_S12, V_BWD90_S13, V_BWD90_S14, V_BWD90_S15}) {
                AttnBwdPrepared acc;
                acc.k_rstd = d_rk.p, acc.rope_cos = d_cs.p, acc.rope_sin = d_sn.p;
                const std::string vn = chain(ver, " knorm", false, true, acc);
                if (vn.empty()) continue;
                ok &= check_bf16(vn + "dq (accumulate)", download(d_dq), cdq);
                ok &= check_bf16(vn + "dk (normed, overwritten)", download(d_dk), knorm_ref);
                ok &= check_bf16(vn + "dv (xsa + attn)", download(d_dv), cdv);
            }
        }
    }
    return ok;
}

// ----------------------------------------------------------------------------
// benchmarks at the seed shape

static void bench_seed() {
    const int B = 48, T = 2048, H = 8, KV = 4, N = B * T;
    const size_t nq = (size_t)N * H * HD, nkv = (size_t)N * KV * HD, nl = (size_t)B * H * T;
    printf("bench (seed shape B=%d T=%d H=%d KV=%d hd=%d; causal FLOPs fwd 4*B*H*T^2*hd/2, bwd 2.5x)\n", B, T, H, KV, HD);
    std::vector<float> hq(nq), hk(nkv), hv(nkv);
    fill_normal(hq);
    fill_normal(hk);
    fill_normal(hv);
    DevBuf<bf16> q(nq), k(nkv), v(nkv), out(nq), dout(nq), dq(nq), dk(nkv), dv(nkv), xo(nq);
    DevBuf<float> lse(nl), vnorm((size_t)N * KV), scratch(attention_backward_scratch_floats(B, T, H, HD));
    upload(q, hq);
    upload(k, hk);
    upload(v, hv);
    upload(dout, hq);  // any data will do for timing
    const double fwd_flops = 4.0 * B * H * (double)T * T * HD / 2, bwd_flops = 2.5 * fwd_flops;
    char shape[64];
    snprintf(shape, sizeof shape, "B%d T%d H%d KV%d", B, T, H, KV);

    float ms = bench_ms([&] { attention_forward_mma(out.p, lse.p, q.p, k.p, v.p, B, T, H, KV, HD, 0); });
    bench_row("attention_forward v0", shape, ms, 0, fwd_flops);
    if (sm90_available()) {
        const char *names[] = {"", "attention_forward v2 (wgmma S1)", "attention_forward v3 (wgmma S2)",
                               "attention_forward v4 (S2+overlap)", "attention_forward v5 (v4, 128 keys)",
                               "attention_forward v6 (v5+ping-pong)", "attention_forward v7 (v6+poly 1/8)",
                               "attention_forward v8 (v6+poly 1/4)", "attention_forward v9 (v7 persistent)"};
        for (int stage = 1; stage <= ATTN_FWD_HOPPER_STAGES; stage++) {
            if (g_stage && stage != g_stage) continue;
            ms = bench_ms([&] { attention_forward_wgmma(out.p, lse.p, q.p, k.p, v.p, B, T, H, KV, HD, 0, stage); });
            bench_row(names[stage], shape, ms, 0, fwd_flops);
        }
    } else {
        printf("  (attention_forward v2..v9 (wgmma) not benchmarked: need an sm_90 GPU and an sm_90a build)\n");
    }
    if (g_fwd_only) {
        ms = bench_ms([&] { attention_forward_naive(out.p, lse.p, q.p, k.p, v.p, 2, T, H, KV); }, 3);
        bench_row("attention_forward v1", "B2 T2048 H8 KV4", ms, 0, fwd_flops * 2 / B);
        return;
    }
    ms = bench_ms([&] {
        attention_backward_mma(dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, out.p, lse.p, B, T, H, KV, HD, scratch.p, false, 0);
    });
    bench_row("attention_backward v0", shape, ms, 0, bwd_flops);
    for (int ver : {V_BWD90, V_BWD90_S2, V_BWD90_S3, V_BWD90_S4, V_BWD90_S5, V_BWD90_S6, V_BWD90_S7, V_BWD90_S8, V_BWD90_S9,
                    V_BWD90_S10, V_BWD90_S11, V_BWD90_S12, V_BWD90_S13, V_BWD90_S14, V_BWD90_S15}) {
        const std::string row = std::string("attention_backward ") + version_name(ver);
        if (const char *why = sm90_skip_reason(ver)) {
            printf("skip %s (%s)\n", row.c_str(), why);
            continue;
        }
        ms = bench_ms([&] {
            attention_backward_sm90(dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, out.p, lse.p, B, T, H, KV, HD, scratch.p, false,
                                    0, sm90_stage(ver));
        });
        bench_row(row.c_str(), shape, ms, 0, bwd_flops);
    }
    ms = bench_ms([&] {
        attention_backward_mma<4>(dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, out.p, lse.p, B, T, H, KV, HD, scratch.p, false, 0);
    });
    bench_row("attention_backward v0/kw4", shape, ms, 0, bwd_flops);

    // the naive version on fewer sequences (it is ~100x slower); its rate is what counts
    const int Bn = 2;
    char shape_n[64];
    snprintf(shape_n, sizeof shape_n, "B%d T%d H%d KV%d", Bn, T, H, KV);
    ms = bench_ms([&] { attention_forward_naive(out.p, lse.p, q.p, k.p, v.p, Bn, T, H, KV); }, 3);
    bench_row("attention_forward v1", shape_n, ms, 0, fwd_flops * Bn / B);
    ms = bench_ms([&] { attention_backward_naive(dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, out.p, lse.p, Bn, T, H, KV, scratch.p); },
                  3);
    bench_row("attention_backward v1", shape_n, ms, 0, bwd_flops * Bn / B);

    // the backward's preprocess: reads dout, out (bf16), lse; writes dq_acc = 0 (fp32), D, lse2;
    // with the accumulator zero already (AttnBwdPrepared::dq_zero, the training backward's layers
    // after the first) D and lse2 only
    const double pre_bytes = 2.0 * nq * 2 + 4.0 * nq + 3.0 * 4 * nl;
    float *D = attention_backward_D(scratch.p, B, T, H, HD), *l2 = D + nl;
    for (int ver = 1; ver <= 3; ver++) {
        ms = bench_ms([&] { attention_backward_preprocess_run(D, l2, scratch.p, dout.p, out.p, lse.p, B, T, H, 0, ver); });
        bench_row((std::string("attn bwd preprocess v") + std::to_string(ver)).c_str(), shape, ms, pre_bytes, 0);
    }
    {
        AttnBwdPrepared prep;
        prep.dq_zero = true;
        ms = bench_ms([&] { attention_backward_preprocess_run(D, l2, scratch.p, dout.p, out.p, lse.p, B, T, H, 0, 0, prep); });
        bench_row("attn bwd preprocess dqz", shape, ms, pre_bytes - 4.0 * nq, 0);
    }
    // each version in the training backward's other modes: dqz (layers without XSA after the
    // first), lse2 (D prepared by xsa_backward, the accumulator zero: XSA layers after the first;
    // reads lse, writes lse2) and lse2 zero (D prepared, the accumulator zeroed: an XSA layer first)
    for (int mode = 0; mode < 3; mode++)
        for (int ver : {1, 3}) {
            AttnBwdPrepared prep;
            prep.dq_zero = mode < 2;
            prep.D = mode > 0;
            static const char *names[] = {"attn bwd preprocess dqz v", "attn bwd preprocess lse2 v",
                                          "attn bwd preprocess lse2 zero v"};
            const double bytes = mode == 0 ? pre_bytes - 4.0 * nq : mode == 1 ? 2.0 * 4 * nl : 2.0 * 4 * nl + 4.0 * nq;
            ms = bench_ms([&] { attention_backward_preprocess_run(D, l2, scratch.p, dout.p, out.p, lse.p, B, T, H, 0, ver, prep); });
            bench_row((names[mode] + std::to_string(ver)).c_str(), shape, ms, bytes, 0);
        }
    // the shipping Hopper stage as the training backward calls it after its first layer: the
    // accumulator zero already, the other one zeroed in the kernel (against the plain call above)
    if (!sm90_skip_reason(V_BWD90 + ATTN_BWD_SM90_STAGE - 1)) {
        AttnBwdPrepared prep;
        prep.dq_buf = 1, prep.dq_zero = true, prep.zero_other = true;
        ms = bench_ms([&] {
            attention_backward_sm90(dq.p, dk.p, dv.p, dout.p, q.p, k.p, v.p, out.p, lse.p, B, T, H, KV, HD, scratch.p, false, 0,
                                    ATTN_BWD_SM90_STAGE, prep);
        });
        bench_row((std::string("attention_backward ") + version_name(V_BWD90 + ATTN_BWD_SM90_STAGE - 1) + " dqz zo").c_str(),
                  shape, ms, 0, bwd_flops);
    }

    // XSA: memory-bound, fewest bytes = read y (+ dout), v (+ vnorm), write out (+ dv)
    const double xf_bytes = 2.0 * nq * 2 + 2.0 * nkv + 4.0 * N * KV;
    const double xb_bytes = 3.0 * nq * 2 + 2.0 * nkv * 2 + 4.0 * N * KV;
    ms = bench_ms([&] { xsa_forward(xo.p, vnorm.p, out.p, v.p, N, H, KV, HD, 0); });
    bench_row("xsa_forward", shape, ms, xf_bytes, 0);
    // both versions, without D and with it (+D: attention's D as well, 4 bytes a row more; what
    // the training backward calls)
    for (int withD = 0; withD < 2; withD++)
        for (int ver = 1; ver <= 2; ver++) {
            ms = bench_ms([&] {
                xsa_backward(dq.p, dv.p, dout.p, out.p, v.p, vnorm.p, N, H, KV, HD, false, 0, withD ? D : nullptr, T, ver);
            });
            bench_row((std::string("xsa_backward v") + std::to_string(ver) + (withD ? " +D" : "")).c_str(), shape, ms,
                      xb_bytes + (withD ? 4.0 * nl : 0), 0);
        }
}

// The backward's preprocess pass (attention_backward_preprocess_run, versions 1, 2 and 3) on its
// own: D = rowsum(dout * out) against a double sum on the CPU, within 1e-6 of the row's sum of
// |terms| (about twice fp32's worst case for the 8-deep sum, so never a false alarm; a lost
// part of a row is ~1/8 of it), lse2 exactly (lse * log2(e) in float, +inf where lse = -inf),
// dq_acc all zero (poisoned first); then versions 2 and 3 against version 1 bit for bit; with D
// prepared (AttnBwdPrepared::D: dout not read, D not written), with dq_acc zero already
// (AttnBwdPrepared::dq_zero: dq_acc not written), and with both (lse2 alone: the training
// backward's XSA layers), each in every version. Shapes: T not a multiple of version 3's tile
// (256 / H t values; 1030 = 16 * 64 + 6 at H = 4), T shorter than one tile, B = 1, H from 1 to 32,
// and H = 6 (no power of two: version 3 falls back to version 1's kernel).
static bool check_preprocess() {
    bool ok = true;
    static const int shapes[][3] = {{3, 17, 8}, {2, 1030, 4}, {1, 4096, 8}, {2, 100, 2},
                                    {1, 33, 16}, {1, 70, 1},  {1, 20, 32}, {2, 9, 6}};  // B, T, H
    for (const int *sh : shapes) {
        const int B = sh[0], T = sh[1], H = sh[2];
        const size_t rows = (size_t)B * T * H, n = rows * HD;
        std::vector<float> dout(n), out(n), lse(rows);
        fill_normal(dout);
        fill_normal(out);
        fill_normal(lse, 3.f);
        round_bf16(dout);
        round_bf16(out);
        for (size_t i = 0; i < rows; i += 7) lse[i] = -INFINITY;  // rows that see no key
        DevBuf<bf16> d_dout(n), d_out(n);
        DevBuf<float> d_lse(rows), d_D(rows), d_l2(rows), d_acc(n);
        upload(d_dout, dout);
        upload(d_out, out);
        upload(d_lse, lse);
        // one call of version ver from poisoned D, lse2 and dq_acc: what it left in each
        struct Got {
            std::vector<float> D, l2, acc;
        };
        auto run = [&](int ver, AttnBwdPrepared prep) {
            poison(d_D.p, rows);
            poison(d_l2.p, rows);
            poison(d_acc.p, n);
            attention_backward_preprocess_run(d_D.p, d_l2.p, d_acc.p, d_dout.p, d_out.p, d_lse.p, B, T, H, 0, ver, prep);
            cudaCheck(cudaDeviceSynchronize());
            return Got{host_f32(d_D.p, rows), host_f32(d_l2.p, rows), host_f32(d_acc.p, n)};
        };
        std::vector<float> D[4], l2[4];
        for (int ver = 1; ver <= 3; ver++) {
            Got got = run(ver, AttnBwdPrepared());
            D[ver] = got.D, l2[ver] = got.l2;
            const std::vector<float> &acc = got.acc;
            double worst = 0;  // |D - ref| / sum |terms|
            size_t bad = 0, nonzero = 0;
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    for (int h = 0; h < H; h++) {
                        const size_t row = ((size_t)b * T + t) * H + h, o = ((size_t)b * H + h) * T + t;
                        double ref = 0, mag = 0;
                        for (int i = 0; i < HD; i++) {
                            ref += (double)dout[row * HD + i] * out[row * HD + i];
                            mag += fabs((double)dout[row * HD + i] * out[row * HD + i]);
                        }
                        const double e = fabs(D[ver][o] - ref) / mag;
                        if (!(e <= worst)) worst = e;  // NaN counts as worst
                        const float want = lse[o] == -INFINITY ? INFINITY : lse[o] * attn::LOG2E;
                        bad += memcmp(&want, &l2[ver][o], sizeof(float)) != 0;
                    }
            for (float z : acc) nonzero += z != 0.f;
            const bool pass = worst <= 1e-6 && bad == 0 && nonzero == 0;
            printf("  %s preprocess v%d B%d T%d H%d: D err / sum|terms| %.3g (tol 1e-6), lse2 %zu wrong, dq_acc %zu nonzero\n",
                   pass ? "ok  " : "FAIL", ver, B, T, H, worst, bad, nonzero);
            printf("observed: attention_preprocess_D[v%d B%d T%d] %.3g\n", ver, B, T, worst);
            ok &= pass;
        }
        for (int ver = 2; ver <= 3; ver++) {
            const bool same = memcmp(D[1].data(), D[ver].data(), rows * 4) == 0 && memcmp(l2[1].data(), l2[ver].data(), rows * 4) == 0;
            printf("  %s preprocess v%d D, lse2 bitwise identical to v1's B%d T%d H%d\n", same ? "ok  " : "FAIL", ver, B, T, H);
            ok &= same;
        }
        // with D prepared by the caller (AttnBwdPrepared::D) D is left alone (still poisoned),
        // lse2 is v1's bit for bit and dq_acc zero; versions 1 and 2 run version 1's kernel
        // without dout, version 3 its own
        for (int ver = 1; ver <= 3; ver++) {
            AttnBwdPrepared prep;
            prep.D = true;
            const Got got = run(ver, prep);
            const std::vector<float> &Dq = got.D, &l2q = got.l2, &acc = got.acc;
            size_t poisoned_D = 0, zero_acc = 0;
            for (float x : Dq) poisoned_D += std::isnan(x);
            for (float x : acc) zero_acc += x == 0.f;
            const bool pass = memcmp(l2q.data(), l2[1].data(), rows * 4) == 0 && poisoned_D == rows && zero_acc == n;
            printf("  %s preprocess v%d with D prepared B%d T%d H%d: D untouched, lse2 v1's bitwise, dq_acc zero\n",
                   pass ? "ok  " : "FAIL", ver, B, T, H);
            ok &= pass;
        }
        // with the accumulator zero already (AttnBwdPrepared::dq_zero) it is left alone (still
        // poisoned), D and lse2 v1's bit for bit, in every version; with D prepared as well
        // (lse2 alone) D is left alone too
        for (int prepared = 0; prepared < 2; prepared++)
            for (int ver = 1; ver <= 3; ver++) {
                AttnBwdPrepared prep;
                prep.dq_zero = true;
                prep.D = prepared;
                const Got got = run(ver, prep);
                const std::vector<float> &Dz = got.D, &l2z = got.l2, &acc = got.acc;
                size_t written = 0, poisoned_D = 0;
                for (float x : acc) written += !std::isnan(x);
                for (float x : Dz) poisoned_D += std::isnan(x);
                const bool D_ok = prepared ? poisoned_D == rows : memcmp(Dz.data(), D[1].data(), rows * 4) == 0;
                const bool pass = D_ok && memcmp(l2z.data(), l2[1].data(), rows * 4) == 0 && written == 0;
                if (prepared)
                    printf("  %s preprocess v%d lse2 only (D prepared, dq_acc zero) B%d T%d H%d: D untouched, lse2 v1's "
                           "bitwise, dq_acc untouched (%zu written)\n",
                           pass ? "ok  " : "FAIL", ver, B, T, H, written);
                else
                    printf("  %s preprocess v%d with dq_acc zero B%d T%d H%d: D, lse2 v1's bitwise, dq_acc untouched (%zu "
                           "written)\n",
                           pass ? "ok  " : "FAIL", ver, B, T, H, written);
                ok &= pass;
            }
    }
    return ok;
}

// exp2_poly (the FMA-pipe exp2 of v7, v8) against exp2 in double, on the CPU, over 2^22 + 1
// points of [-126, 0] (its error repeats with period 1 in x, so every fraction is covered
// finely); below -126 (denormal results, flushed by the kernels' arithmetic) it must stay in
// [0, 2^-126], and -inf must give exactly 0 (masked scores). Measured max relative error
// 1.01e-4, the tolerance is 5x that (bf16 rounding of P alone is up to 2^-9 = 2e-3).
static bool check_exp2_poly() {
    const int n = 1 << 22;
    double worst = 0;
    float worst_x = 0;
    for (int i = 0; i <= n; i++) {
        const float x = -126.f * (float)i / (float)n;
        const double e = fabs(attn::exp2_poly(x) / exp2((double)x) - 1);
        if (!(e <= worst)) worst = e, worst_x = x;  // NaN counts as worst
    }
    bool ok = worst <= 5e-4;
    for (float x = -126.f; x >= -140.f; x -= 0.01f) ok &= attn::exp2_poly(x) >= 0.f && attn::exp2_poly(x) <= ldexpf(1.f, -126);
    ok &= attn::exp2_poly(-INFINITY) == 0.f;
    printf("observed: exp2_poly max relative error %.3g (at x = %g), -inf -> %g: %s\n", worst, worst_x,
           attn::exp2_poly(-INFINITY), ok ? "ok" : "FAILED (tolerance 5e-4)");
    return ok;
}

int main(int argc, char **argv) {
    bool do_check = true, do_bench = true, small = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check-only")) do_bench = false;
        else if (!strcmp(argv[i], "--bench-only")) do_check = false;
        else if (!strcmp(argv[i], "--small")) small = true;
        else if (!strcmp(argv[i], "--fwd-only")) g_fwd_only = true;
        else if (!strcmp(argv[i], "--stage") && i + 1 < argc) {
            g_stage = atoi(argv[++i]);
            if (g_stage < 1 || g_stage > ATTN_FWD_HOPPER_STAGES)
                fatal_config("dev/attention.cu: --stage %s: need 1..%d", argv[i], ATTN_FWD_HOPPER_STAGES);
        } else if (!strcmp(argv[i], "--sm90-stages") && i + 1 < argc) {
            g_sm90_stages = 0;
            for (const char *c = argv[++i]; *c;) {  // comma-separated stage numbers
                if (*c == ',') {
                    c++;
                    continue;
                }
                char *end = nullptr;
                const long st = strtol(c, &end, 10);
                if (end == c || st < 1 || st > ATTN_BWD_SM90_STAGES)
                    fatal_config("dev/attention.cu: --sm90-stages '%s': give stages 1..%d, e.g. 1,3,10", argv[i], ATTN_BWD_SM90_STAGES);
                g_sm90_stages |= 1u << st;
                c = end;
            }
        } else
            fatal_config("dev/attention.cu: unknown argument '%s' (use --check-only, --bench-only, --small, --fwd-only, "
                         "--stage N, --sm90-stages 1,2,..)",
                         argv[i]);
    }
    DeviceInfo di = device_info();
    printf("device: %s (sm_%d%d, %d SMs)\n", di.name, di.cc_major, di.cc_minor, di.sm_count);
    bool ok = true;
    if (do_check) {
        const Case cases[] = {
            // one token: every row sees only itself (no chain: then y = v, xsa(attn(v)) is 0 and its
            // v-gradient cancels down to rounding noise, which no relative test can judge)
            {2, 1, 8, 4, 1.f, false},
            {2, 7, 8, 4, 1.f, false},     // a few tokens: one partial tile everywhere
            {3, 17, 8, 2, 1.f, true},     // smaller than every tile, 4:1 GQA
            {2, 100, 8, 4, 1.f, false},   // one full and one partial 64-row query tile
            {2, 200, 8, 4, 3.f, true},    // peaky softmax (scores of std 9), partial tiles
            {3, 100, 8, 4, 1.f, false},   // Hopper tiles: one 128/192-row tile, part of its warpgroups idle
            {1, 1030, 4, 4, 1.f, true},   // no GQA, T just past a multiple of every tile
            {1, 1100, 8, 4, 1.f, false},  // T % 64 = 12, T % 128 = 76
            {1, 1100, 8, 4, 3.f, false},  // peaky, T not a multiple of 64, 128 or 192 (1100 = 5*192 + 140)
            {1, 2048, 8, 4, 1.f, false},  // the seed's T and heads
            {1, 4096, 8, 2, 1.f, false},  // the longest sequence, 4:1 GQA
        };
        ok &= check_exp2_poly();
        ok &= check_preprocess();
        for (const Case &c : cases)
            if (!small || c.T <= 200) ok &= run_case(c);
        printf("attention_forward dispatches to: %s; attention_backward to: %s\n",
               attn_fwd_stage() > 0 && sm90_available() ? version_name(attn_fwd_stage() + V_WGMMA - 1)
                                                                          : "v0 (mma.sync)",
               attn_bwd_stage() > 0 && sm90_available() ? version_name(attn_bwd_stage() + V_BWD90 - 1)
                                                                          : "v0 (mma.sync)");
        printf(ok ? "all attention checks passed (%d skipped)\n" : "SOME ATTENTION CHECKS FAILED (%d skipped)\n", g_skipped);
    }
    if (do_bench) bench_seed();
    return ok ? 0 : 1;
}
