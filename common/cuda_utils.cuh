// cuda_utils.cuh: the CUDA basics every GPU header uses: error checks with file:line, bf16
// helpers, device properties, one-block allocations and event timers, and the device helpers
// several kernel headers share (8-wide bf16 vectors, warp and block reductions).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "utils.h"

typedef __nv_bfloat16 bf16;

// ----------------------------------------------------------------------------
// error checks: report the failing call's file:line and a hint, then exit

inline void cuda_check(cudaError_t err, const char *file, int line) {
    if (err != cudaSuccess)
        fatal_code(4, "CUDA error at %s:%d: %s (%s)%s", file, line, cudaGetErrorString(err), cudaGetErrorName(err),
                   err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver
                       ? " HINT: no usable GPU here; run with --device cpu for the CPU reference path"
                       : err == cudaErrorMemoryAllocation ? " HINT: out of GPU memory; lower TRAIN_BATCH_TOKENS" : "");
}
#define cudaCheck(err) cuda_check((err), __FILE__, __LINE__)

// After a kernel launch: the launch error now; with -DSYNC_CHECK also the execution error.
#ifdef SYNC_CHECK
#define cudaCheckLaunch() do { cudaCheck(cudaGetLastError()); cudaCheck(cudaDeviceSynchronize()); } while (0)
#else
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())
#endif

template <typename T>
inline void cuda_free_check(T *&p, const char *file, int line) {
    if (p) cuda_check(cudaFree(p), file, line);
    p = nullptr;
}
#define cudaFreeCheck(p) cuda_free_check(p, __FILE__, __LINE__)

inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }
// blocks for n items at per_block a block, at least 1 and at most 65535 (grid-stride kernels)
inline int grid_blocks(size_t n, int per_block) { return (int)std::min<size_t>(std::max<size_t>((n + per_block - 1) / per_block, 1), 65535); }
inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// ----------------------------------------------------------------------------
// device info

struct DeviceInfo {
    int id = 0, sm_count = 0, cc_major = 0, cc_minor = 0;
    size_t smem_optin = 0, l2_bytes = 0, total_mem = 0;
    char name[256] = {0};
};
inline DeviceInfo device_info(int id = 0) {
    DeviceInfo d;
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, id));
    d.id = id;
    d.sm_count = p.multiProcessorCount;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.smem_optin = p.sharedMemPerBlockOptin;
    d.l2_bytes = p.l2CacheSize;
    d.total_mem = p.totalGlobalMem;
    snprintf(d.name, sizeof d.name, "%s", p.name);
    return d;
}

// ----------------------------------------------------------------------------
// host <-> device copies of float data as bf16 or fp32

inline void to_device_bf16(__nv_bfloat16 *d, const float *h, size_t n) {
    std::vector<__nv_bfloat16> tmp(n);
    for (size_t i = 0; i < n; i++) tmp[i] = __float2bfloat16(h[i]);
    cudaCheck(cudaMemcpy(d, tmp.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
}
inline void from_device_bf16(float *h, const __nv_bfloat16 *d, size_t n) {
    std::vector<__nv_bfloat16> tmp(n);
    cudaCheck(cudaMemcpy(tmp.data(), d, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = __bfloat162float(tmp[i]);
}

// ----------------------------------------------------------------------------
// timing with events (device work is asynchronous)

struct GpuTimer {
    cudaEvent_t a, b;
    GpuTimer() { cudaCheck(cudaEventCreate(&a)); cudaCheck(cudaEventCreate(&b)); }
    ~GpuTimer() { cudaEventDestroy(a); cudaEventDestroy(b); }
    void start(cudaStream_t s = 0) { cudaCheck(cudaEventRecord(a, s)); }
    float stop_ms(cudaStream_t s = 0) {
        cudaCheck(cudaEventRecord(b, s));
        cudaCheck(cudaEventSynchronize(b));
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, a, b));
        return ms;
    }
};

// ----------------------------------------------------------------------------
// where the GPU time goes, by kernel family (PROFILE=1 in train_gpt; dev/bench.sh)
//
// Every launcher opens a ProfScope naming its family. When the profiler is on, the outermost
// scope records an event as it opens and another as it closes (nested launchers, such as the
// GEMMs inside the optimizer step, count for the outer one), so the time between two events
// belongs to the family of the scope that opened there, and the time between a close and the
// next open is a gap: host launch latency, memsets, and whatever no scope covers. Off, a scope
// costs one branch. On, it adds two event records per launch, so a profiled step is a little
// slower than a plain one: report both.

enum ProfFamily : int { PROF_ATTN_FWD, PROF_ATTN_BWD, PROF_GEMM, PROF_MEMBOUND, PROF_LOSS, PROF_OPTIM, PROF_COMM, PROF_GAP, PROF_FAMILIES };
inline const char *prof_family_name(int f) {
    static const char *names[PROF_FAMILIES] = {"attention fwd", "attention bwd", "GEMMs (cuBLASLt)", "memory-bound layers",
                                               "loss (head CE)", "optimizer+weights", "communication", "gaps"};
    return f >= 0 && f < PROF_FAMILIES ? names[f] : "?";
}

struct Profiler {
    bool on = false;
    int depth = 0;                    // scopes open now (only the outermost records)
    std::vector<cudaEvent_t> events;  // a pool, grown on demand
    std::vector<int> family;          // family[i]: whose time runs from events[i] to events[i+1]
    size_t n = 0;                     // events recorded since the last collect
    double ms[PROF_FAMILIES] = {};    // accumulated by profiler_collect
    long calls[PROF_FAMILIES] = {};
};
inline Profiler &profiler() {
    static Profiler p;
    return p;
}
inline void profiler_record(int fam, cudaStream_t s) {
    Profiler &p = profiler();
    if (p.n == p.events.size()) {
        p.events.emplace_back();
        p.family.push_back(0);
        cudaCheck(cudaEventCreate(&p.events.back()));
    }
    cudaCheck(cudaEventRecord(p.events[p.n], s));
    p.family[p.n++] = fam;
}
// Wait for the recorded events and add their intervals to ms[]; the pool is reused after.
inline void profiler_collect() {
    Profiler &p = profiler();
    if (p.n == 0) return;
    cudaCheck(cudaEventSynchronize(p.events[p.n - 1]));
    for (size_t i = 0; i + 1 < p.n; i++) {
        float t;
        cudaCheck(cudaEventElapsedTime(&t, p.events[i], p.events[i + 1]));
        p.ms[p.family[i]] += t;
        if (p.family[i] != PROF_GAP) p.calls[p.family[i]]++;
    }
    p.n = 0;
}
inline void profiler_reset() {
    Profiler &p = profiler();
    p.n = 0;
    for (int f = 0; f < PROF_FAMILIES; f++) p.ms[f] = 0, p.calls[f] = 0;
}
struct ProfScope {
    cudaStream_t s;
    bool rec;
    ProfScope(int fam, cudaStream_t stream) : s(stream), rec(profiler().on && profiler().depth++ == 0) {
        if (rec) profiler_record(fam, s);
    }
    ~ProfScope() {
        if (!profiler().on) return;
        profiler().depth--;
        if (rec) profiler_record(PROF_GAP, s);
    }
    ProfScope(const ProfScope &) = delete;
    ProfScope &operator=(const ProfScope &) = delete;
};

// ----------------------------------------------------------------------------
// device helpers shared by the kernel headers

// x rounded to bf16 and back: a value as the reference's bf16 tensors hold it
__device__ inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

namespace lyr {

// 8 bf16 (one 16-byte word, e.g. loaded ahead of the math) as 8 floats
__device__ __forceinline__ void unpack8(float (&f)[8], const uint4 &u) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 t = __bfloat1622float2(h[j]);
        f[2 * j] = t.x;
        f[2 * j + 1] = t.y;
    }
}
// 8 bf16 <-> 8 floats, one 16-byte access
__device__ __forceinline__ void load8(float (&f)[8], const bf16 *p) { unpack8(f, *reinterpret_cast<const uint4 *>(p)); }
// 8 fp32 values of a parameter table that may be only 4-byte aligned
__device__ __forceinline__ void load8(float (&f)[8], const float *p) {
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = p[j];
}
// 8 floats rounded to bf16 as one 16-byte word (e.g. to store, or to shuffle as 4 words)
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    return u;
}
__device__ __forceinline__ void store8(bf16 *p, const float (&f)[8]) { *reinterpret_cast<uint4 *>(p) = pack8(f); }
__device__ __forceinline__ void zero8(float (&f)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = 0.f;
}
// a control parameter as the reference uses it: cast to bf16
__device__ __forceinline__ float rnd(float x) { return __bfloat162float(__float2bfloat16(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float nan_value() { return __int_as_float(0x7fc00000); }

// Butterfly reductions: every lane ends with the same bits (each step adds two equal-order
// partials, and a + b == b + a exactly), so the result is deterministic.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over a 1-D block (whole warps), the same in every thread. sh: >= 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.f);
}

}  // namespace lyr
