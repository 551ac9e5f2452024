// The subset of CUDA C that the norm kernels use, emulated on the CPU so the tests run the
// kernels' own source without a GPU (tests/norm_kernels_on_cpu.rs): one OS thread per CUDA thread;
// warp shuffles exchange values through a per-warp barrier (so a lane that skipped a shuffle its
// warp-mates execute deadlocks the test instead of passing silently); __syncthreads is a
// per-block barrier; blocks run one after another, so `__shared__` can be `static`. Not a
// performance model and not a memory model beyond that: a functional check of indexing, masking,
// shuffle pairing and the arithmetic.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3u {
    unsigned x, y, z;
};
thread_local dim3u threadIdx, blockIdx;
dim3u blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct uint4 {
    unsigned x, y, z, w;
};
struct float4 {
    float x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

struct Warp {
    std::unique_ptr<std::barrier<>> bar;
    float slots[32];
};
thread_local Warp* this_warp;
thread_local int this_lane;
std::barrier<>* this_block;

inline float __shfl_xor_sync(unsigned mask, float v, int offset) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "emulator: only full-warp shuffles are emulated\n");
        std::abort();
    }
    this_warp->slots[this_lane] = v;
    this_warp->bar->arrive_and_wait();
    const float r = this_warp->slots[this_lane ^ offset];
    this_warp->bar->arrive_and_wait();
    return r;
}

// Reads lane `src` of the warp (CUDA: srcLane mod 32 for a full-warp width).
inline float __shfl_sync(unsigned mask, float v, int src) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "emulator: only full-warp shuffles are emulated\n");
        std::abort();
    }
    this_warp->slots[this_lane] = v;
    this_warp->bar->arrive_and_wait();
    const float r = this_warp->slots[src & 31];
    this_warp->bar->arrive_and_wait();
    return r;
}

inline void __syncthreads() { this_block->arrive_and_wait(); }

// Runs `kernel()` as a grid of `grid` blocks of `block` threads (whole warps only).
template <class F>
void launch(unsigned grid, unsigned block, F kernel) {
    if (block == 0 || block % 32 != 0 || block > 1024) {
        std::fprintf(stderr, "emulator: block of %u threads is not 1..32 whole warps\n", block);
        std::exit(3);
    }
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> block_barrier(block);
        this_block = &block_barrier;
        std::vector<Warp> warps(block / 32);
        for (auto& w : warps) w.bar = std::make_unique<std::barrier<>>(32);
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([&, t, b] {
                threadIdx = {t, 0, 0};
                blockIdx = {b, 0, 0};
                this_warp = &warps[t / 32];
                this_lane = t % 32;
                kernel();
            });
        for (auto& th : threads) th.join();
    }
}
