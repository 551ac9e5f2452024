// Helpers shared by every kernel source in cuda/: bf16 conversions and 8-wide (16-byte) loads and
// stores. NVRTC gets no include path (the sources are embedded in the binary), so src/nvrtc.rs
// prepends this file to each source before compiling it; the .cu files therefore do not #include
// it (the CPU emulator, tests/emulator/norm_kernels.cpp, includes it itself).
//
// Header-free CUDA C: bf16 travels as unsigned short (or as pairs in an unsigned int: the element
// at the lower address in the low half); all math is f32.

typedef unsigned short bf16;

__device__ __forceinline__ float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float bf16_to_float(bf16 h) { return __uint_as_float(((unsigned int)h) << 16); }

// Round to nearest even; NaN stays NaN (a quiet bit is set so truncation cannot make it infinite).
__device__ __forceinline__ unsigned int f32_to_bf16_bits(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return u >> 16;
}

__device__ __forceinline__ float round_bf16(float f) {
    return __uint_as_float(f32_to_bf16_bits(f) << 16);
}

__device__ __forceinline__ unsigned int pack_bf16x2(float lo, float hi) {
    return f32_to_bf16_bits(lo) | (f32_to_bf16_bits(hi) << 16);
}

// 8 bf16 (one 16-byte access) to and from f32.
__device__ __forceinline__ void unpack8(uint4 v, float* f) {
    f[0] = bf16_lo(v.x); f[1] = bf16_hi(v.x);
    f[2] = bf16_lo(v.y); f[3] = bf16_hi(v.y);
    f[4] = bf16_lo(v.z); f[5] = bf16_hi(v.z);
    f[6] = bf16_lo(v.w); f[7] = bf16_hi(v.w);
}

__device__ __forceinline__ uint4 pack8(const float* f) {
    uint4 v;
    v.x = pack_bf16x2(f[0], f[1]);
    v.y = pack_bf16x2(f[2], f[3]);
    v.z = pack_bf16x2(f[4], f[5]);
    v.w = pack_bf16x2(f[6], f[7]);
    return v;
}

// 8 f32 of a read-only table (two 16-byte accesses through the read-only cache); p 16-byte aligned.
__device__ __forceinline__ void load8_f32(const float* p, float* f) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
    f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
