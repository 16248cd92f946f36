// quant.h: the export path. A checkpoint's weights -> per-tensor int6 / int5 / int8 codes with
// fp16 scales (or fp16 / fp32 passthrough) -> one zstd-compressed artifact (.ptz), and back.
//
// The scheme is the reference's mixed_quantize_int6 / dequantize_mixed_int6 (record script) with
// the int5 row-max formula of the int5 record for the MLP in the `seed` preset. Per tensor, in
// state_dict order, the first rule that matches:
//
//   1. not a float tensor                         -> RAW   stored as is
//   2. at most 65,536 elements                    -> FP16  fp16 copy (control tensors too)
//   3. name contains a control pattern (below)    -> FP32  fp32 copy
//   4. MLP matrix (quant_class QC_MLP), MLP_QUANT_BITS=5 -> INT5  row-max scales
//      MLP or attention matrix (QC_MLP / QC_ATTN)  -> INT6  GPTQ-lite: best of 5 clip percentiles
//   5. anything else (embeddings, "other")        -> INT8  0.9999984-quantile clip per row
//
// The formulas, w = the tensor as fp32 (bf16 tables widened exactly, as torch's t.float()):
//
//   INT6, 2-D: for p in {0.999, 0.9995, 0.9999, 0.99999, 1.0}:
//                clip[r] = torch.quantile(|w[r,:]|, p) (linear interpolation; p = 1: the row max)
//                s[r]    = fp16(max(clip[r] / 31, 1/31))            (the division in fp32)
//                q       = clamp(round_half_even(w / float(s[r])), -31, 31)
//                err(p)  = mean over the whole tensor of (w - q*s)^2
//              keep the first p with the strictly smallest err.
//   INT5, 2-D: s[r] = max(fp16(max(rowmax[r] / 15, 1e-12)), 2^-14)   (the int5 script's extra
//              clamp to fp16's smallest normal; the record script has it)
//              q = clamp(round_half_even(w / float(s[r])), -16, 15)
//   INT8, 2-D: clip[r] = torch.quantile(|w[r,:]|, 0.9999984); t = max(clip[r]/127, 1/127) in fp32;
//              q = clamp(round_half_even(clamp(w, -clip, clip) / t), -127, 127); s[r] = fp16(t).
//              Note q divides by the fp32 t, not by the stored fp16 s (the script does this).
//   other ranks (1-D, 3-D, 4-D; none in our model) use one scale for the whole tensor:
//     INT6: s = fp16(amax/31 if amax > 0 else 1), INT5: s = fp16(max(amax/15, 1e-12)) with the
//     division in double (Python floats), then q as above; INT8: clip = quantile of all |w|,
//     s = fp32(clip/127 in double, or 1 if clip is 0), stored as fp32. A zero fp16 scale (amax
//     below ~1e-6) makes 0/0: torch turns that NaN into q = 0 on x86, and so do we.
//   Dequantize: float(q) * float(s) in fp32, rounded to the training dtype (bf16 for the
//   embedding tables, as torch's .to(bfloat16)); FP16/FP32 copies go back to the training dtype.
//   (The script's keep_float_tensor / INT8_KEEP_FLOAT_* rules belong to its older int8 exporter,
//   which the final export does not use: small tensors simply become fp16.)
//
// Where we part from the script, only on inputs no trained model has: NaN/Inf weights in a
// tensor to be quantized stop us with an error (torch would write garbage codes); if all five
// GPTQ-lite errors overflow to inf (|w| ~ 1e19) we keep index 0 where the script would crash.
// Weights beyond ~1e6 overflow an fp16 scale to inf exactly as in torch (codes 0, NaN back).
//
// Bit-exactness with torch (dev/ref/quant.py checks it), and where it could break:
//   - torch.quantile computes rank = float32(p) * (n-1) in fp32, takes the sorted values at
//     floor(rank) and ceil(rank), and interpolates with lerp. On x86 CPUs with AVX2 / AVX-512
//     (what every GPU host has) torch's lerp kernel is fused: w < 0.5 ? fma(w, b-a, a) :
//     fma(w-1, b-a, b). We use the same fmaf. (torch's non-SIMD "default" kernel rounds the
//     product first; under ATEN_CPU_CAPABILITY=default some clip values differ by one ulp.)
//   - err(p): torch takes the mean of fp32 squared errors in fp32 with a thread-dependent
//     summation order; we add the same fp32 squares in double. Both keep the first of exact
//     ties (identical codes give identical sums either way, e.g. every row whose max is below 1,
//     where all five candidates clamp to s = 1/31). A different choice needs two candidates
//     whose MSEs agree to within fp32 rounding of the sum (~1e-6 relative), and then either
//     choice is as good as the other.
//
// The artifact file (.ptz), version 1. All integers little-endian; str16 = u16 length + bytes.
//
//   offset  size  field
//   0       8     magic "PGQUAN\r\n"    (plain, so a wrong file is named as such before zstd)
//   8       4     u32 version = 1
//   12      8     u64 body_size         bytes of the body once decompressed
//   20      ...   one zstd frame (level 22, with zstd's own checksum) holding the body, to EOF
//
//   body:
//   +--------------------------------------------------------------------------------------+
//   | u32 n_config, n_config x { str16 key, str16 value }   the model's config (P_MODEL)     |
//   | u32 n_tensors                                                                        |
//   | n_tensors x table entry:                                                             |
//   |    str16 name     state_dict name                                                    |
//   |    u8    scheme   0 RAW, 1 FP16, 2 FP32, 3 INT8, 4 INT6, 5 INT5                       |
//   |    u8    dtype    the training dtype (checkpoint.h codes: 0 f32, 1 bf16, 2 f16, ...)  |
//   |    u8    ndim     0..4, then u64 dims[ndim]                                          |
//   |    u8    pct      INT6 2-D: index of the chosen percentile (0..4), 5 = chosen per row |
//   |                   (QUANT_PCT_PER_ROW, not the reference's); else 255                  |
//   | payload, tensor by tensor in table order:                                            |
//   |    values  RAW: numel x dtype size | FP16: numel x 2 | FP32: numel x 4 |             |
//   |            INT*: numel x 1 byte, the code as an int8 (two's complement), row-major    |
//   |    scales  INT* 2-D: rows x fp16 | INT6/INT5 other ranks: 1 x fp16 |                  |
//   |            INT8 other ranks: 1 x fp32 | none for RAW/FP16/FP32                        |
//   | u32 crc32 of every body byte before it                                               |
//   +--------------------------------------------------------------------------------------+
//
// Why one byte per int6/int5 code and not 6 or 5 bits: zstd codes bytes. With one code per
// byte its entropy coder sees the skewed distribution of the codes and gets close to their
// entropy (~2.7 bits for int6 of a N(0, 0.05) matrix); bit-packed codes straddle byte
// boundaries, look like noise, and compress worse. Measured with zstd -22 on 6.3M codes of a
// random 4096x1536 N(0, 0.05) matrix: int6 as bytes 2,172,815 B vs packed 2,603,323 B; int5
// (row-max) as bytes 3,398,719 B vs packed 3,806,336 B. So: bytes (what the reference stores too).
//
// Plain C++17; the zstd parts need -DUSE_ZSTD and -lzstd (the Makefile sets both when found).
#pragma once

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include "checkpoint.h"
#include "tensors.h"
#include "utils.h"

#ifdef USE_ZSTD
#include <zstd.h>
#endif

// ----------------------------------------------------------------------------
// the policy's constants (the reference script's values)

static const char QUANT_MAGIC[8] = {'P', 'G', 'Q', 'U', 'A', 'N', '\r', '\n'};
static const uint32_t QUANT_VERSION = 1;
// Level 22 is slow (~30 s single-threaded for the full-size model's 28 MB body on a 16-core box,
// ~80 s on a loaded 2-core one) and we keep it: it is what the challenge measures, and nothing
// faster kept the artifact within 0.1% of its size. Measured on the seed preset's 28 MB body
// (random init; CPU seconds on a 2-core box, 2026-12-01): level 22 ~80 s; level 19 -0.1% in 50 s
// (not fast enough either); level 19 with 2 threads and 4 MB jobs +1.0% (86 s of CPU: the jobs'
// overlaps are matched twice); level 15 +7.7%, level 9 +8.0%, level 3 +5.6% in 0.5 s.
// Quantizing itself takes ~1 s.
static const int QUANT_ZSTD_LEVEL = 22;
// What the progress line before the compression adds at the default level: why it takes long.
inline std::string zstd_level_note(long level) {
    return level == QUANT_ZSTD_LEVEL ? " (zstd level 22 is single-threaded and takes ~30 s for the full-size model; faster "
                                       "settings made the artifact larger)"
                                     : "";
}
static const size_t QUANT_PASSTHROUGH_MAX_NUMEL = 65536;  // at most this many elements: fp16 copy
static const long long SUBMISSION_LIMIT_BYTES = 16000000;  // compressed model + code bytes

// Substrings that mark control tensors (gains, mixes, gates): kept in fp32 when large.
static const char *QUANT_CONTROL_PATTERNS[] = {"attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix",
                                               "resid_mixes", "q_gain", "skip_weight", "skip_weights", "smear",
                                               "dtg_gate", "ve_layer_scales", "ve_shared.scale"};

// GPTQ-lite's clip candidates; index 4 (1.0) is the plain row max.
static const double GPTQ_PERCENTILES[5] = {0.999, 0.9995, 0.9999, 0.99999, 1.0};
static const int GPTQ_NUM_PCT = 5;
static const uint8_t QPCT_NONE = 255;
// Ours, off by default (QUANT_PCT_PER_ROW=1): each row keeps the percentile with its own least
// squared error instead of the tensor's. The scales carry the choice, so dequantization is the
// same; the table records this value instead of one index.
static const uint8_t QPCT_PER_ROW = 5;
// INT8_CLIP_PERCENTILE / 100, computed in double as the script does (99.99984 / 100.0)
static const double INT8_CLIP_Q = 99.99984 / 100.0;

enum QScheme : uint8_t { QS_RAW = 0, QS_FP16 = 1, QS_FP32 = 2, QS_INT8 = 3, QS_INT6 = 4, QS_INT5 = 5 };
inline const char *qscheme_name(QScheme s) {
    static const char *n[] = {"raw", "fp16", "fp32", "int8", "int6", "int5"};
    return s <= QS_INT5 ? n[s] : "?";
}
inline bool qscheme_is_int(QScheme s) { return s == QS_INT8 || s == QS_INT6 || s == QS_INT5; }
inline bool dtype_is_float(DType t) { return t == DT_F32 || t == DT_BF16 || t == DT_F16; }

// One tensor of the artifact. `values` and `scales` hold exactly the payload bytes of the format.
struct QTensor {
    std::string name;
    QScheme scheme = QS_RAW;
    DType dtype = DT_F32;          // the training dtype, restored by dequantization
    std::vector<int64_t> shape;
    uint8_t pct = QPCT_NONE;       // INT6 2-D: chosen index into GPTQ_PERCENTILES
    std::vector<uint8_t> values;   // int8 codes | fp16 | fp32 | raw bytes (see the diagram)
    std::vector<uint8_t> scales;   // little-endian fp16 per row, or one fp16 / fp32
};
struct Artifact {
    std::vector<std::pair<std::string, std::string>> config;  // the checkpoint's model options (P_MODEL), in table order
    std::vector<QTensor> tensors;                              // checkpoint order
};


// ----------------------------------------------------------------------------
// the policy: which scheme a tensor gets

inline bool is_control_tensor(const std::string &name) {
    for (const char *p : QUANT_CONTROL_PATTERNS) if (name.find(p) != std::string::npos) return true;
    return false;
}

inline QScheme quant_scheme_for(const std::string &name, DType dtype, size_t numel, int mlp_bits) {
    if (!dtype_is_float(dtype)) return QS_RAW;
    if (numel <= QUANT_PASSTHROUGH_MAX_NUMEL) return QS_FP16;
    if (is_control_tensor(name)) return QS_FP32;
    QuantClass c = quant_class(name);
    if (c == QC_MLP) return mlp_bits == 5 ? QS_INT5 : QS_INT6;
    if (c == QC_ATTN) return QS_INT6;
    return QS_INT8;
}

// ----------------------------------------------------------------------------
// the pieces of arithmetic that must round exactly like torch

// q = clamp(round_half_even(x), lo, hi) as torch computes it and casts to int8. x is NaN only
// for 0/0 (a zero scale, see the top): the cast of NaN gives 0 on x86, so we return 0.
inline int8_t round_clamp(float x, int lo, int hi) {
    if (std::isnan(x)) return 0;
    float r = std::nearbyint(x);  // the default rounding mode: to nearest, ties to even
    if (r < (float)lo) r = (float)lo;
    if (r > (float)hi) r = (float)hi;
    return (int8_t)r;
}

// torch.quantile(x, p, interpolation="linear") given the |x| values sorted ascending at least
// from index floor(rank) on (see quantile_prepare). p becomes a float32 scalar tensor in torch,
// so rank = float32(p) * (n-1) in fp32; the lerp is the fused one of torch's AVX2/AVX-512 kernel.
inline float torch_quantile_sorted(const float *sorted, size_t n, double p) {
    if (n == 0) return 0.f;  // (an empty row: only reachable by forcing a scheme on an empty tensor)
    float pf = (float)p;
    float rank = pf * (float)(n - 1);
    size_t lo = (size_t)rank, hi = (size_t)std::ceil(rank);
    if (hi > n - 1) hi = n - 1;  // cannot happen for p <= 1, but never read past the row
    float w = rank - (float)lo;
    float a = sorted[lo], b = sorted[hi];
    return std::fabs(w) < 0.5f ? std::fmaf(w, b - a, a) : std::fmaf(w - 1.0f, b - a, b);
}
// Smallest index torch_quantile_sorted reads for p.
inline size_t quantile_low_index(size_t n, double p) { return n ? (size_t)((float)p * (float)(n - 1)) : 0; }

// |x[0..n)| into buf, ordered so that buf[from..n) holds the sorted top values: the only ones a
// high quantile reads. (nth_element + sorting the tail: a full sort would give the same values.)
inline void quantile_prepare(const float *x, size_t n, size_t from, std::vector<float> &buf) {
    buf.resize(n);
    for (size_t i = 0; i < n; i++) buf[i] = std::fabs(x[i]);
    if (from >= n) return;
    std::nth_element(buf.begin(), buf.begin() + from, buf.end());
    std::sort(buf.begin() + from, buf.end());
}

inline void check_quantile_size(const std::string &name, size_t n) {
    // torch refuses quantile() over more than 2^24 values (its ranks are fp32): so do we
    if (n > (size_t)1 << 24) fatal("tensor %s: a quantile over %zu values (torch allows at most 2^24); cannot quantize it", name.c_str(), n);
}

// fn(r, row, sorted) for every row of a (rows, cols) matrix, in parallel: sorted is the row
// prepared by quantile_prepare for torch_quantile_sorted at quantiles >= p_low.
template <typename Fn>
void for_each_row_sorted(const float *w, size_t rows, size_t cols, double p_low, Fn fn) {
    const size_t from = quantile_low_index(cols, p_low);
#pragma omp parallel
    {
        std::vector<float> buf;
#pragma omp for schedule(static)
        for (long long rr = 0; rr < (long long)rows; rr++) {
            const size_t r = (size_t)rr;
            const float *row = w + r * cols;
            quantile_prepare(row, cols, from, buf);
            fn(r, row, buf);
        }
    }
}

// ----------------------------------------------------------------------------
// the quantizers. w: the tensor as fp32, row-major; they fill qt.values / qt.scales / qt.pct.

// INT6 GPTQ-lite for a (rows, cols) matrix.
inline void quantize_int6_rows(const std::string &name, const float *w, size_t rows, size_t cols, QTensor &qt,
                               bool per_row = false) {
    check_quantile_size(name, cols);
    const float inv31 = (float)(1.0 / 31);
    // per row and candidate: the fp16 scale, and the sum of fp32 squared errors (in double)
    std::vector<uint16_t> s16(rows * GPTQ_NUM_PCT);
    std::vector<double> err(rows * GPTQ_NUM_PCT);
    for_each_row_sorted(w, rows, cols, GPTQ_PERCENTILES[0],  // the smallest p reads lowest
                        [&](size_t r, const float *row, const std::vector<float> &buf) {
        for (int c = 0; c < GPTQ_NUM_PCT; c++) {
            float clip = c < GPTQ_NUM_PCT - 1 ? torch_quantile_sorted(buf.data(), cols, GPTQ_PERCENTILES[c])
                                              : cols ? buf[cols - 1] : 0.f;  // p = 1: the row max
            float t = clip / 31.0f;
            if (t < inv31) t = inv31;
            uint16_t h = f32_to_f16(t);
            float s = f16_to_f32(h);
            double e = 0;
            for (size_t i = 0; i < cols; i++) {
                float recon = (float)round_clamp(row[i] / s, -31, 31) * s;
                float d = row[i] - recon;
                float sq = d * d;
                e += (double)sq;
            }
            s16[r * GPTQ_NUM_PCT + c] = h;
            err[r * GPTQ_NUM_PCT + c] = e;
        }
    });
    // the tensor's error per candidate: rows added in order, so the result is thread-count free
    int best = 0;
    double best_err = 0;
    for (int c = 0; c < GPTQ_NUM_PCT; c++) {
        double e = 0;
        for (size_t r = 0; r < rows; r++) e += err[r * GPTQ_NUM_PCT + c];
        e /= (double)(rows * cols);
        if (c == 0 || e < best_err) { best = c; best_err = e; }  // strict <: the first of equals wins
    }
    qt.pct = per_row ? QPCT_PER_ROW : (uint8_t)best;
    qt.values.resize(rows * cols);
    qt.scales.resize(rows * 2);
    for (size_t r = 0; r < rows; r++) {
        int pick = per_row ? 0 : best;
        if (per_row)  // the row's own least error (strict <: the first of equals wins)
            for (int c = 1; c < GPTQ_NUM_PCT; c++)
                if (err[r * GPTQ_NUM_PCT + c] < err[r * GPTQ_NUM_PCT + pick]) pick = c;
        uint16_t h = s16[r * GPTQ_NUM_PCT + pick];
        float s = f16_to_f32(h);
        put_u16le(&qt.scales[2 * r], h);
        for (size_t i = 0; i < cols; i++) qt.values[r * cols + i] = (uint8_t)round_clamp(w[r * cols + i] / s, -31, 31);
    }
}

// INT5 row-max for a (rows, cols) matrix.
inline void quantize_int5_rows(const float *w, size_t rows, size_t cols, QTensor &qt) {
    const float tiny = 6.103515625e-05f;  // torch.finfo(torch.float16).tiny = 2^-14
    qt.values.resize(rows * cols);
    qt.scales.resize(rows * 2);
    for (size_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float amax = 0;
        for (size_t i = 0; i < cols; i++) amax = std::max(amax, std::fabs(row[i]));
        float t = amax / 15.0f;
        if (t < 1e-12f) t = 1e-12f;
        uint16_t h = f32_to_f16(t);
        if (f16_to_f32(h) < tiny) h = f32_to_f16(tiny);
        float s = f16_to_f32(h);
        put_u16le(&qt.scales[2 * r], h);
        for (size_t i = 0; i < cols; i++) qt.values[r * cols + i] = (uint8_t)round_clamp(row[i] / s, -16, 15);
    }
}

// INT8 with the 0.9999984-quantile clip for a (rows, cols) matrix.
inline void quantize_int8_rows(const std::string &name, const float *w, size_t rows, size_t cols, QTensor &qt) {
    check_quantile_size(name, cols);
    const float inv127 = (float)(1.0 / 127);
    qt.values.resize(rows * cols);
    qt.scales.resize(rows * 2);
    for_each_row_sorted(w, rows, cols, INT8_CLIP_Q, [&](size_t r, const float *row, const std::vector<float> &buf) {
        float clip = torch_quantile_sorted(buf.data(), cols, INT8_CLIP_Q);
        float t = clip / 127.0f;
        if (t < inv127) t = inv127;
        put_u16le(&qt.scales[2 * r], f32_to_f16(t));
        for (size_t i = 0; i < cols; i++) {
            float x = std::max(std::min(row[i], clip), -clip);
            qt.values[r * cols + i] = (uint8_t)round_clamp(x / t, -127, 127);
        }
    });
}

// The other ranks (not 2-D): one scale for the whole tensor.
inline void quantize_whole_tensor(const std::string &name, const float *w, size_t n, QScheme scheme, QTensor &qt) {
    qt.values.resize(n);
    if (scheme == QS_INT8) {
        check_quantile_size(name, n);
        std::vector<float> buf;
        quantile_prepare(w, n, quantile_low_index(n, INT8_CLIP_Q), buf);
        float clip = torch_quantile_sorted(buf.data(), n, INT8_CLIP_Q);
        float t = clip > 0 ? (float)((double)clip / 127.0) : 1.0f;  // Python float math, then fp32
        qt.scales.resize(4);
        put_f32le(qt.scales.data(), t);
        for (size_t i = 0; i < n; i++) {
            float x = std::max(std::min(w[i], clip), -clip);
            qt.values[i] = (uint8_t)round_clamp(x / t, -127, 127);
        }
        return;
    }
    float amax = 0;
    for (size_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(w[i]));
    int lo = scheme == QS_INT6 ? -31 : -16, hi = scheme == QS_INT6 ? 31 : 15;
    double t = scheme == QS_INT6 ? (amax > 0 ? (double)amax / 31.0 : 1.0) : std::max((double)amax / 15.0, 1e-12);
    uint16_t h = f32_to_f16((float)t);  // torch.tensor(x, dtype=float16) goes double -> float -> half
    float s = f16_to_f32(h);
    qt.scales.resize(2);
    put_u16le(qt.scales.data(), h);
    for (size_t i = 0; i < n; i++) qt.values[i] = (uint8_t)round_clamp(w[i] / s, lo, hi);
}

// Quantize one checkpoint tensor with the given scheme (any scheme may be forced: the tests and
// the fuzz seeds use that on small tensors; artifact_quantize applies the policy). `origin`
// names where the weights came from (a file) in error messages.
inline QTensor qtensor_quantize(const CkptTensor &t, QScheme scheme, const char *origin = "checkpoint", bool pct_per_row = false) {
    QTensor qt;
    qt.name = t.name;
    qt.scheme = scheme;
    qt.dtype = t.dtype;
    qt.shape = t.shape;
    size_t n = shape_numel(t.shape);
    if (scheme == QS_RAW) { qt.values = t.data; return qt; }
    if (!dtype_is_float(t.dtype)) fatal("%s: tensor %s: %s scheme needs a float tensor, not %s", origin, t.name.c_str(), qscheme_name(scheme), dtype_name(t.dtype));
    std::vector<float> w(n);
    for (size_t i = 0; i < n; i++) w[i] = ckpt_float_at(t, i);
    if (scheme == QS_FP16) {
        qt.values.resize(2 * n);
        for (size_t i = 0; i < n; i++) {
            // an f16 tensor stays bit for bit (torch's .to(float16) is then a no-op)
            uint16_t h = t.dtype == DT_F16 ? get_u16le(&t.data[2 * i]) : f32_to_f16(w[i]);
            put_u16le(&qt.values[2 * i], h);
        }
        return qt;
    }
    if (scheme == QS_FP32) {
        qt.values.resize(4 * n);
        for (size_t i = 0; i < n; i++) put_f32le(&qt.values[4 * i], w[i]);
        return qt;
    }
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite(w[i]))
            fatal("%s: tensor %s: element %zu is %g; weights with NaN/Inf cannot be quantized (did training diverge?)",
                  origin, t.name.c_str(), i, (double)w[i]);
    if (t.shape.size() == 2) {
        size_t rows = (size_t)t.shape[0], cols = (size_t)t.shape[1];
        if (scheme == QS_INT6) quantize_int6_rows(t.name, w.data(), rows, cols, qt, pct_per_row);
        else if (scheme == QS_INT5) quantize_int5_rows(w.data(), rows, cols, qt);
        else quantize_int8_rows(t.name, w.data(), rows, cols, qt);
    } else {
        quantize_whole_tensor(t.name, w.data(), n, scheme, qt);
    }
    return qt;
}

// The whole export: every model tensor of the checkpoint (training-state extras, whose names
// contain '/', are left out) under the policy above. mlp_bits: 5 (seed) or 6 (record).
inline void artifact_quantize(const Checkpoint &ck, int mlp_bits, Artifact &art, const char *origin = "checkpoint",
                              bool pct_per_row = false) {
    if (mlp_bits != 5 && mlp_bits != 6) fatal_config("MLP_QUANT_BITS=%d: must be 5 or 6", mlp_bits);
    art = Artifact();
    // Only the model's own options go in: the artifact must be a function of the weights and the
    // model config, the same bytes wherever and however it was written (no RUN_ID, OUT_DIR, ...).
    art.config.clear();
    for (int i = 0; i < NUM_OPTIONS; i++)
        if (model_option(i))
            if (const std::string *v = ck.get(OPTIONS[i].env)) art.config.emplace_back(OPTIONS[i].env, *v);
    for (const CkptTensor &t : ck.tensors) {
        if (t.name.find('/') != std::string::npos) continue;
        art.tensors.push_back(
            qtensor_quantize(t, quant_scheme_for(t.name, t.dtype, shape_numel(t.shape), mlp_bits), origin, pct_per_row));
    }
}

// ----------------------------------------------------------------------------
// dequantization

// The tensor back in its training dtype, as the reference's dequantize_mixed_int6 (followed by
// load_state_dict's copy into the parameter's dtype).
inline CkptTensor qtensor_dequantize(const QTensor &qt) {
    CkptTensor t{qt.name, qt.dtype, qt.shape, {}};
    size_t n = shape_numel(qt.shape);
    if (qt.scheme == QS_RAW) { t.data = qt.values; return t; }
    if (qt.scheme == QS_FP16 && qt.dtype == DT_F16) { t.data = qt.values; return t; }
    std::vector<float> w(n);
    if (qt.scheme == QS_FP16) {
        for (size_t i = 0; i < n; i++) w[i] = f16_to_f32(get_u16le(&qt.values[2 * i]));
    } else if (qt.scheme == QS_FP32) {
        for (size_t i = 0; i < n; i++) w[i] = get_f32le(&qt.values[4 * i]);
    } else {
        bool per_row = qt.shape.size() == 2;
        size_t cols = per_row ? (size_t)qt.shape[1] : n;
        for (size_t i = 0; i < n; i++) {
            size_t r = per_row && cols ? i / cols : 0;
            float s = qt.scheme == QS_INT8 && !per_row ? get_f32le(qt.scales.data()) : f16_to_f32(get_u16le(&qt.scales[2 * r]));
            w[i] = (float)(int8_t)qt.values[i] * s;
        }
    }
    t.data.resize(n * dtype_size(qt.dtype));
    for (size_t i = 0; i < n; i++) {
        if (qt.dtype == DT_F32) put_f32le(&t.data[4 * i], w[i]);
        else put_u16le(&t.data[2 * i], qt.dtype == DT_BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]));
    }
    return t;
}

inline void artifact_dequantize(const Artifact &art, Checkpoint &out) {
    out = Checkpoint();
    out.config = art.config;
    for (const QTensor &qt : art.tensors) out.tensors.push_back(qtensor_dequantize(qt));
}

// ----------------------------------------------------------------------------
// serialization

// Payload sizes implied by a table entry (the format stores no sizes of its own).
inline size_t qtensor_value_bytes(QScheme s, DType dt, size_t numel) {
    switch (s) {
    case QS_RAW: return numel * dtype_size(dt);
    case QS_FP16: return numel * 2;
    case QS_FP32: return numel * 4;
    default: return numel;
    }
}
inline size_t qtensor_scale_bytes(QScheme s, const std::vector<int64_t> &shape) {
    if (!qscheme_is_int(s)) return 0;
    if (shape.size() == 2) return (size_t)shape[0] * 2;
    return s == QS_INT8 ? 4 : 2;
}

inline std::vector<uint8_t> artifact_body_serialize(const Artifact &art) {
    ByteWriter w;
    config_entries_write(w, art.config);
    w.u32((uint32_t)art.tensors.size());
    for (const QTensor &qt : art.tensors) {
        check_internal(qt.values.size() == qtensor_value_bytes(qt.scheme, qt.dtype, shape_numel(qt.shape)));
        check_internal(qt.scales.size() == qtensor_scale_bytes(qt.scheme, qt.shape));
        w.str16(qt.name);
        w.u8(qt.scheme);
        w.u8(qt.dtype);
        w.u8((uint8_t)qt.shape.size());
        for (int64_t d : qt.shape) w.u64((uint64_t)d);
        w.u8(qt.pct);
    }
    for (const QTensor &qt : art.tensors) {
        w.bytes(qt.values.data(), qt.values.size());
        w.bytes(qt.scales.data(), qt.scales.size());
    }
    w.u32(crc32(w.buf.data(), w.buf.size()));
    return std::move(w.buf);
}

// zstd at `level` (22 for the real thing; the tests use lower levels on big inputs: same bytes
// out of the decompressor, minutes less). Returns the compressed frame.
inline std::vector<uint8_t> zstd_compress(const std::vector<uint8_t> &src, int level) {
#ifdef USE_ZSTD
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx) fatal("zstd: cannot create a compression context (out of memory?)");
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    std::vector<uint8_t> dst(ZSTD_compressBound(src.size()));
    size_t r = ZSTD_compress2(cctx, dst.data(), dst.size(), src.data(), src.size());
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(r)) fatal("zstd: compression failed (%s)", ZSTD_getErrorName(r));
    dst.resize(r);
    return dst;
#else
    (void)src; (void)level;
    fatal("this build has no zstd, so it cannot write artifacts HINT: apt-get install libzstd-dev, then make clean && make");
#endif
}

// The whole .ptz file.
inline std::vector<uint8_t> artifact_serialize(const Artifact &art, int level = QUANT_ZSTD_LEVEL) {
    std::vector<uint8_t> body = artifact_body_serialize(art);
    ByteWriter w;
    w.bytes(QUANT_MAGIC, 8);
    w.u32(QUANT_VERSION);
    w.u64(body.size());
    std::vector<uint8_t> z = zstd_compress(body, level);
    w.bytes(z.data(), z.size());
    return std::move(w.buf);
}

// ----------------------------------------------------------------------------
// parsing: bounds-checked, never reads out of range, never allocates more than the input
// justifies; every failure is false plus one line in *err (the caller adds the file name).


// Parse a decompressed body (the fuzzer drives this directly too).
inline bool artifact_parse_body(const uint8_t *p, size_t n, Artifact &art, std::string *err) {
    char buf[320];
    ParseFail fail{err};
    art = Artifact();
    if (n < 4 + 4 + 4) return fail("body too short to be an artifact");
    if (!crc32_trailer_ok(p, n)) return fail("corrupt (checksum mismatch in the decompressed body)");
    ByteReader r{p, n - 4};
    std::string msg;
    if (!config_entries_read(r, art.config, &msg)) return fail(msg);
    uint32_t nt;
    if (!r.u32(nt)) return fail("truncated (tensor count)");
    if (nt > 100000) return fail("absurd tensor count");
    std::set<std::string> names;
    size_t payload = 0;  // bytes the table says follow
    for (uint32_t i = 0; i < nt; i++) {
        QTensor qt;
        uint8_t sch, dt, nd;
        if (!r.str16(qt.name)) return fail("truncated (tensor table)");
        const char *nm = qt.name.c_str();
        if (qt.name.empty()) return fail("empty tensor name in the table");
        if (!names.insert(qt.name).second) { snprintf(buf, sizeof buf, "tensor %.200s appears twice", nm); return fail(buf); }
        if (!r.u8(sch) || !r.u8(dt) || !r.u8(nd)) return fail("truncated (tensor table)");
        if (sch > QS_INT5) { snprintf(buf, sizeof buf, "tensor %.200s: unknown scheme code %u", nm, sch); return fail(buf); }
        if (dt > DT_I64) { snprintf(buf, sizeof buf, "tensor %.200s: unknown dtype code %u", nm, dt); return fail(buf); }
        if (nd > 4) { snprintf(buf, sizeof buf, "tensor %.200s: %u dimensions (at most 4)", nm, nd); return fail(buf); }
        qt.scheme = (QScheme)sch;
        qt.dtype = (DType)dt;
        uint64_t numel = 1;
        const char *bad = read_dims(r, nd, qt.shape, numel);
        if (!strcmp(bad, "truncated")) return fail("truncated (tensor table)");
        if (*bad) { snprintf(buf, sizeof buf, "tensor %.200s: absurd shape", nm); return fail(buf); }
        if (!r.u8(qt.pct)) return fail("truncated (tensor table)");
        if ((qt.scheme == QS_RAW) == dtype_is_float(qt.dtype)) {
            snprintf(buf, sizeof buf, "tensor %.200s: scheme %s does not fit dtype %s", nm, qscheme_name(qt.scheme), dtype_name(qt.dtype));
            return fail(buf);
        }
        bool has_pct = qt.scheme == QS_INT6 && nd == 2;
        if (has_pct ? (qt.pct >= GPTQ_NUM_PCT && qt.pct != QPCT_PER_ROW) : qt.pct != QPCT_NONE) {
            snprintf(buf, sizeof buf, "tensor %.200s: bad percentile index %u", nm, qt.pct);
            return fail(buf);
        }
        // sizes: numel <= 2^40 and at most 8 bytes an element, so no overflow below
        size_t need = qtensor_value_bytes(qt.scheme, qt.dtype, (size_t)numel) + qtensor_scale_bytes(qt.scheme, qt.shape);
        if (need > r.n - r.pos || payload > r.n - r.pos - need) {
            snprintf(buf, sizeof buf, "tensor %.200s: data runs past the end of the body", nm);
            return fail(buf);
        }
        payload += need;
        art.tensors.push_back(std::move(qt));
    }
    if (payload != r.n - r.pos) {
        snprintf(buf, sizeof buf, "payload is %zu bytes but the tensor table accounts for %zu", r.n - r.pos, payload);
        return fail(buf);
    }
    for (QTensor &qt : art.tensors) {
        size_t nv = qtensor_value_bytes(qt.scheme, qt.dtype, shape_numel(qt.shape));
        size_t ns = qtensor_scale_bytes(qt.scheme, qt.shape);
        qt.values.assign(p + r.pos, p + r.pos + nv);
        r.pos += nv;
        qt.scales.assign(p + r.pos, p + r.pos + ns);
        r.pos += ns;
        if (qscheme_is_int(qt.scheme)) {
            int lo = qt.scheme == QS_INT6 ? -32 : qt.scheme == QS_INT5 ? -16 : -128;
            int hi = qt.scheme == QS_INT6 ? 31 : qt.scheme == QS_INT5 ? 15 : 127;
            for (uint8_t b : qt.values)
                if ((int8_t)b < lo || (int8_t)b > hi) {
                    snprintf(buf, sizeof buf, "tensor %.200s: code %d out of the %s range", qt.name.c_str(), (int8_t)b, qscheme_name(qt.scheme));
                    return fail(buf);
                }
        }
    }
    return true;
}

// Parse a whole .ptz file image.
inline bool artifact_parse(const uint8_t *p, size_t n, Artifact &art, std::string *err) {
    char buf[320];
    ParseFail fail{err};
    art = Artifact();
    if (n < 8 || memcmp(p, QUANT_MAGIC, 8) != 0)
        return fail("not a quantized artifact (bad magic; expected a .ptz written by quantize or train_gpt)");
    if (n < 20) return fail("truncated (header)");
    uint32_t version = get_u32le(p + 8);
    if (version != QUANT_VERSION) {
        snprintf(buf, sizeof buf, "unsupported artifact version %u (this build reads version %u)", version, QUANT_VERSION);
        return fail(buf);
    }
    uint64_t body_size = get_u64le(p + 12);
    const uint8_t *z = p + 20;
    size_t zn = n - 20;
    // A zstd block of at most 128 KiB costs at least 4 bytes (an RLE block), so no frame expands
    // more than 32768x: a larger claim is a corrupt header, refused before any allocation.
    if (body_size > (uint64_t)zn * 32768 + (1u << 20) || body_size > (1ull << 34)) {
        snprintf(buf, sizeof buf, "truncated or corrupt (the header claims a %llu-byte body from %zu compressed bytes)", (unsigned long long)body_size, zn);
        return fail(buf);
    }
#ifdef USE_ZSTD
    unsigned long long fcs = ZSTD_getFrameContentSize(z, zn);
    if (fcs == ZSTD_CONTENTSIZE_ERROR) return fail("truncated or corrupt (the compressed body does not start with a zstd frame header)");
    if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != body_size) {
        snprintf(buf, sizeof buf, "corrupt (the zstd frame holds %llu bytes but the header says %llu)", fcs, (unsigned long long)body_size);
        return fail(buf);
    }
    std::vector<uint8_t> body((size_t)body_size);
    size_t got = ZSTD_decompress(body.data(), body.size(), z, zn);
    if (ZSTD_isError(got)) {
        snprintf(buf, sizeof buf, "truncated or corrupt (zstd: %s)", ZSTD_getErrorName(got));
        return fail(buf);
    }
    if (got != body_size) {
        snprintf(buf, sizeof buf, "truncated or corrupt (the zstd frame gives %zu bytes, the header says %llu)", got, (unsigned long long)body_size);
        return fail(buf);
    }
    return artifact_parse_body(body.data(), body.size(), art, err);
#else
    (void)z;
    return fail("this build has no zstd, so it cannot read artifacts HINT: apt-get install libzstd-dev, then make clean && make");
#endif
}

inline void artifact_read(const char *path, Artifact &art) {
    std::vector<uint8_t> bytes = read_file_bytes(path);
    std::string err;
    if (!artifact_parse(bytes.data(), bytes.size(), art, &err)) fatal("%s: %s", path, err.c_str());
}

inline void artifact_write(const char *path, const Artifact &art, int level = QUANT_ZSTD_LEVEL) {
    std::vector<uint8_t> bytes = artifact_serialize(art, level);
    write_file_bytes(path, bytes.data(), bytes.size());
}

// ----------------------------------------------------------------------------
// the size report

// A tensor's line in the per-category table: scheme plus the reference's class.
inline std::string qtensor_category(const QTensor &qt) {
    static const char *cls[] = {"embed", "mlp", "attn", "other"};
    if (!qscheme_is_int(qt.scheme)) return qt.scheme == QS_FP16 ? "fp16 passthrough" : qt.scheme == QS_FP32 ? "fp32 control" : "raw (non-float)";
    return std::string(qscheme_name(qt.scheme)) + " " + cls[quant_class(qt.name)];
}

// The source files a program is built from: `main_file` and every `#include "..."` it pulls in,
// transitively, resolved against the including file's directory. Paths are relative to `root`.
struct CodeFiles {
    std::vector<std::string> paths;
    size_t raw_bytes = 0;     // what counts toward the submission limit (as the reference's code)
    size_t bundle_bytes = 0;  // the same files as one zstd stream, for information
};

inline std::string path_join_norm(const std::string &dir, const std::string &rel) {
    std::string full = dir.empty() ? rel : dir + "/" + rel;
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= full.size()) {
        size_t j = full.find('/', i);
        if (j == std::string::npos) j = full.size();
        std::string part = full.substr(i, j - i);
        if (part == "..") { if (!parts.empty() && parts.back() != "..") parts.pop_back(); else parts.push_back(part); }
        else if (!part.empty() && part != ".") parts.push_back(part);
        i = j + 1;
    }
    std::string out;
    for (auto &s : parts) out += (out.empty() ? "" : "/") + s;
    return out;
}

// The repository root for code_files: `given` if set (it must exist), else the directory of the
// running binary when train_gpt.cu is there (programs sit in the repo root), else ".".
inline std::string find_source_dir(const std::string &given) {
    if (!given.empty()) {
        if (!dir_exists(given.c_str())) fatal_config("--source-dir %s: no such directory", given.c_str());
        return given;
    }
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = '\0';
        std::string dir(exe);
        dir = dir.substr(0, dir.rfind('/'));
        if (file_exists((dir + "/train_gpt.cu").c_str())) return dir;
    }
    return ".";
}

inline CodeFiles code_files(const std::string &root, const char *main_file = "train_gpt.cu", int level = QUANT_ZSTD_LEVEL) {
    CodeFiles cf;
    std::vector<std::string> todo = {main_file};
    std::vector<uint8_t> bundle;
    while (!todo.empty()) {
        std::string rel = todo.front();
        todo.erase(todo.begin());
        if (std::find(cf.paths.begin(), cf.paths.end(), rel) != cf.paths.end()) continue;
        std::string full = root + "/" + rel;
        if (!file_exists(full.c_str())) {
            if (cf.paths.empty()) fatal("%s: not found, so the code size is unknown HINT: pass --source-dir DIR (the repository root)", full.c_str());
            continue;  // a quoted include outside the tree (a system header): not ours to count
        }
        std::vector<uint8_t> text = read_file_bytes(full.c_str());
        cf.paths.push_back(rel);
        cf.raw_bytes += text.size();
        std::string header = rel + "\n" + std::to_string(text.size()) + "\n";
        bundle.insert(bundle.end(), header.begin(), header.end());
        bundle.insert(bundle.end(), text.begin(), text.end());
        // scan for #include "x": the line, after blanks, starts with '#', then "include", then '"'
        std::string dir = rel.find('/') == std::string::npos ? "" : rel.substr(0, rel.rfind('/'));
        size_t pos = 0;
        while (pos < text.size()) {
            size_t end = pos;
            while (end < text.size() && text[end] != '\n') end++;
            std::string line((const char *)text.data() + pos, end - pos);
            pos = end + 1;
            size_t k = line.find_first_not_of(" \t");
            if (k == std::string::npos || line[k] != '#') continue;
            k = line.find_first_not_of(" \t", k + 1);
            if (k == std::string::npos || line.compare(k, 7, "include") != 0) continue;
            size_t q1 = line.find('"', k + 7);
            size_t q2 = q1 == std::string::npos ? q1 : line.find('"', q1 + 1);
            if (q2 == std::string::npos) continue;
            todo.push_back(path_join_norm(dir, line.substr(q1 + 1, q2 - q1 - 1)));
        }
    }
    cf.bundle_bytes = zstd_compress(bundle, level).size();
    return cf;
}

// The report lines (no trailing newline), for quantize and train_gpt's finale to print/log.
inline std::vector<std::string> artifact_report(const Artifact &art, size_t file_bytes, const CodeFiles &code, int level) {
    struct Cat { std::string name; size_t tensors = 0, params = 0, bytes = 0; };
    std::vector<Cat> cats;
    for (const QTensor &qt : art.tensors) {
        std::string name = qtensor_category(qt);
        auto it = std::find_if(cats.begin(), cats.end(), [&](const Cat &c) { return c.name == name; });
        if (it == cats.end()) { cats.push_back(Cat{name}); it = cats.end() - 1; }
        it->tensors++;
        it->params += shape_numel(qt.shape);
        it->bytes += qt.values.size() + qt.scales.size();
    }
    std::vector<std::string> out;
    char line[512];
    size_t tp = 0, tb = 0;
    out.push_back("quant: category               tensors       params  payload bytes (before zstd)");
    for (const Cat &c : cats) {
        snprintf(line, sizeof line, "quant: %-20s %8zu %12zu %14zu", c.name.c_str(), c.tensors, c.params, c.bytes);
        out.push_back(line);
        tp += c.params;
        tb += c.bytes;
    }
    snprintf(line, sizeof line, "quant: %-20s %8zu %12zu %14zu", "total", art.tensors.size(), tp, tb);
    out.push_back(line);
    snprintf(line, sizeof line, "Serialized model int6+zstd: %zu bytes%s", file_bytes, level == QUANT_ZSTD_LEVEL ? "" : " (NOT level 22: a test run)");
    out.push_back(line);
    std::string names;
    for (size_t i = 0; i < code.paths.size(); i++) names += (i ? " " : "") + code.paths[i];
    snprintf(line, sizeof line, "Code size: %zu bytes (%zu files; %zu bytes as one zstd bundle): %s", code.raw_bytes, code.paths.size(),
             code.bundle_bytes, names.c_str());
    out.push_back(line);
    long long total = (long long)file_bytes + (long long)code.raw_bytes;
    long long spare = SUBMISSION_LIMIT_BYTES - total;
    snprintf(line, sizeof line, "Total submission size int6+zstd: %lld bytes (limit %lld: %s %lld bytes)", total, SUBMISSION_LIMIT_BYTES,
             spare >= 0 ? "fits with" : "OVER THE LIMIT by", spare >= 0 ? spare : -spare);
    out.push_back(line);
    return out;
}
