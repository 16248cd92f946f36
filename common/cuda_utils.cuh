// cuda_utils.cuh: the CUDA basics every GPU header uses: error checks with file:line, bf16
// helpers, device properties, one-block allocations and event timers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <vector>

#include "utils.h"

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
