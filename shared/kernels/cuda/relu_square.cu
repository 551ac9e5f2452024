// relu_square: the MLP's activation h = u², u = (a > 0 ? a : slope·a), elementwise on bf16
// (slope 0: relu², the baseline; slope > 0: the records' LeakyReLU²), and its backward
//   da = dh · dh/da = dh · 2u · (a > 0 ? 1 : slope) = 2 · (a > 0 ? a : slope²·a) · dh.
// Memory-bound: 8 bf16 per 16-byte load, math in f32, one rounding per output.
// Header-free for NVRTC: bf16 travels as unsigned short (helpers from common.cuh).

__device__ __forceinline__ float act(float a, float slope) {
  float u = a > 0.0f ? a : slope * a;
  return u * u;
}
__device__ __forceinline__ float act_grad(float a, float dh, float slope2) {
  return 2.0f * (a > 0.0f ? a : slope2 * a) * dh;
}

// h[i] = act(a[i]); n elements; a and h 16-byte aligned.
extern "C" __global__ void relu_square_forward(const bf16* __restrict__ a, bf16* __restrict__ h,
                                               long long n, float slope) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long n8 = n / 8;
  const uint4* a8 = reinterpret_cast<const uint4*>(a);
  uint4* h8 = reinterpret_cast<uint4*>(h);
  for (long long i = first; i < n8; i += stride) {
    float f[8];
    unpack8(a8[i], f);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = act(f[j], slope);
    h8[i] = pack8(f);
  }
  for (long long i = n8 * 8 + first; i < n; i += stride)
    h[i] = (bf16)f32_to_bf16_bits(act(bf16_to_float(a[i]), slope));
}

// da[i] = act'(a[i]) · dh[i]; all 16-byte aligned.
extern "C" __global__ void relu_square_backward(const bf16* __restrict__ a, const bf16* __restrict__ dh,
                                                bf16* __restrict__ da, long long n, float slope) {
  const float slope2 = slope * slope;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long n8 = n / 8;
  const uint4* a8 = reinterpret_cast<const uint4*>(a);
  const uint4* g8 = reinterpret_cast<const uint4*>(dh);
  uint4* d8 = reinterpret_cast<uint4*>(da);
  for (long long i = first; i < n8; i += stride) {
    float f[8], g[8];
    unpack8(a8[i], f);
    unpack8(g8[i], g);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = act_grad(f[j], g[j], slope2);
    d8[i] = pack8(f);
  }
  for (long long i = n8 * 8 + first; i < n; i += stride)
    da[i] = (bf16)f32_to_bf16_bits(act_grad(bf16_to_float(a[i]), bf16_to_float(dh[i]), slope2));
}
