// check.cuh: the harness every dev/<family>.cu check uses (llm.c's dev/cuda template):
// random inputs, poisoned outputs, a relative-error validation against the CPU reference that
// fails on NaN, and a benchmark row (median time over repeats, L2 flushed between them) with the
// achieved rate against the H200's measured ceilings.
//
// A dev check exits non-zero on any mismatch, so `make test` on a GPU machine runs them all.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <cstring>
#include <string>
#include <vector>

#include "../common/cuda_utils.cuh"

// Measured on an H200 of this project's device machine (2026-10/11): a large
// device-to-device copy moves ~4.3 TB/s (bytes read + written); a large bf16 GEMM on random data
// runs ~790 TFLOP/s. These are the ceilings the benchmark rows are compared against.
static const double H200_COPY_BYTES_PER_S = 4.3e12;
static const double H200_BF16_FLOPS = 790e12;

// The verdict: a check that fails calls expect(false) (validate's result, or its own test);
// main ends with `return check_verdict("dev_x");`, non-zero when anything failed.
static int g_fail = 0;
inline void expect(bool ok) {
    if (!ok) g_fail++;
}
// skipped: checks not run here (e.g. no sm_90a kernel), counted in the closing line when any
inline int check_verdict(const char *prog, int skipped = 0) {
    char sk[48] = "";
    if (skipped) snprintf(sk, sizeof sk, " (%d skipped)", skipped);
    if (g_fail) {
        printf("%s: %d check(s) FAILED%s\n", prog, g_fail, sk);
        return 1;
    }
    printf("%s: all checks passed%s\n", prog, sk);
    return 0;
}
// The command line of a check: [--no-bench]; returns whether to benchmark.
inline bool check_args(int argc, char **argv, const char *prog) {
    bool bench = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-bench")) bench = false;
        else fatal_config("%s: unknown argument %s (usage: %s [--no-bench])", prog, argv[i], prog);
    }
    return bench;
}

// x rounded to bf16 (round to nearest even), as a float
inline float rbf(float x) { return __bfloat162float(__float2bfloat16(x)); }

// A device buffer of `n` T's, freed with its scope.
template <typename T>
struct DevBuf {
    T *p = nullptr;
    size_t n = 0;
    explicit DevBuf(size_t count) : n(count) { cudaCheck(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T))); }
    ~DevBuf() { cudaFreeCheck(p); }
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
};

static std::mt19937_64 &dev_rng() { static std::mt19937_64 r(1234); return r; }
inline void fill_normal(std::vector<float> &v, float std = 1.f, float mean = 0.f) {
    std::normal_distribution<float> nd(mean, std);
    for (float &x : v) x = nd(dev_rng());
}
inline void fill_uniform_int(std::vector<int> &v, int lo, int hi) {
    std::uniform_int_distribution<int> u(lo, hi - 1);
    for (int &x : v) x = u(dev_rng());
}

// Device copies of host vectors (at least one element, so empty shapes still get a pointer) and
// host copies of device buffers.
inline __nv_bfloat16 *dev_bf16(const std::vector<float> &h) {
    __nv_bfloat16 *d;
    cudaCheck(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * sizeof(__nv_bfloat16)));
    to_device_bf16(d, h.data(), h.size());
    return d;
}
inline float *dev_f32(const std::vector<float> &h) {
    float *d;
    cudaCheck(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
inline std::vector<float> host_f32(const float *d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
inline std::vector<float> host_bf16(const __nv_bfloat16 *d, size_t n) {
    std::vector<float> h(n);
    from_device_bf16(h.data(), d, n);
    return h;
}

// Poison a device buffer with NaN bytes (0xFF..) so unwritten outputs fail the check.
template <typename T>
inline void poison(T *d, size_t n) { cudaCheck(cudaMemset(d, 0xFF, n * sizeof(T))); }

// Compare `got` to `ref`: pass when |got - ref| <= atol + rtol * |ref| for every element and
// nothing is NaN/Inf. Prints one line; returns true on pass. rtol follows the precision of the
// kernel's arithmetic: ~1e-5 for fp32 math, ~1e-2 when bf16 operands or outputs are involved.
inline bool validate(const char *name, const float *got, const float *ref, size_t n, double rtol, double atol) {
    size_t bad = 0, first = n;
    double max_abs = 0, num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], d = std::fabs(g - r);
        bool ok = std::isfinite(g) && d <= atol + rtol * std::fabs(r);
        if (!ok) { if (first == n) first = i; bad++; }
        if (std::isfinite(g)) max_abs = std::max(max_abs, d);
        num += d * d;
        den += r * r;
    }
    double rel = std::sqrt(num / std::max(den, 1e-300));
    if (bad) {
        printf("  FAIL %-28s %zu/%zu mismatches (first at %zu: got %.6g ref %.6g), max abs err %.3g, rel L2 %.3g\n", name, bad, n,
               first, got[first], ref[first], max_abs, rel);
        return false;
    }
    printf("  ok   %-28s n=%zu max abs err %.3g rel L2 %.3g\n", name, n, max_abs, rel);
    return true;
}

// Median time in ms of `fn` over `reps` runs, with a 256 MB write between runs to flush L2.
template <typename Fn>
inline float bench_ms(Fn fn, int reps = 20) {
    static char *flush = nullptr;
    const size_t flush_bytes = 256ull << 20;
    if (!flush) cudaCheck(cudaMalloc(&flush, flush_bytes));
    for (int i = 0; i < 3; i++) fn();  // warm up
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> t;
    GpuTimer timer;
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaMemsetAsync(flush, i, flush_bytes));
        timer.start();
        fn();
        t.push_back(timer.stop_ms());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// One benchmark row. bytes: the fewest bytes the kernel must move; flops: its math. Prints the
// achieved rate and the percentage of the matching ceiling.
inline void bench_row(const char *kernel, const char *shape, float ms, double bytes, double flops) {
    double s = ms * 1e-3;
    if (flops > 0)
        printf("  bench %-26s %-28s %9.4f ms %8.1f TFLOP/s %5.1f%% of bf16 GEMM peak\n", kernel, shape, ms, flops / s / 1e12,
               100.0 * flops / s / H200_BF16_FLOPS);
    else
        printf("  bench %-26s %-28s %9.4f ms %8.1f GB/s    %5.1f%% of copy bandwidth\n", kernel, shape, ms, bytes / s / 1e9,
               100.0 * bytes / s / H200_COPY_BYTES_PER_S);
}
