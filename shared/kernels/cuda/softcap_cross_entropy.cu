// softcap_cross_entropy: per-row cross-entropy of soft-capped logits y = c·tanh(z), z the head
// GEMM's bf16 output [N, V] (the 1/c already folded into the head's weight):
//   forward   lse_i = log Σ_j exp(y_ij),  nll_i = lse_i − y_i,t_i           (f32 [N] each)
//   backward  dz_ij = g_i · (exp(y_ij − lse_i) − [j = t_i]) · c·(1 − tanh²(z_ij))   (bf16 [N, V])
// One block per row. Forward keeps the row's y in shared memory (V·4 bytes) between the max and
// the sum passes; everything is f32. A target outside [0, V) gives nll = NaN (no host sync here
// to raise an error). Header-free for NVRTC: bf16 travels as unsigned short (helpers from
// common.cuh).

// Block-wide reduction by `op` (blockDim.x a multiple of 32, at most 1024; `identity` fills the
// missing warps); `scratch` holds 32 floats. All threads get the result.
template <class Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, float identity, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce(v, scratch, __int_as_float(0xff800000), MaxOp());
}
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_reduce(v, scratch, 0.0f, SumOp());
}

// Grid: N blocks. Dynamic shared memory: V floats. z rows 16-byte aligned when V % 8 == 0
// (the vector path); otherwise element by element.
extern "C" __global__ void softcap_cross_entropy_forward(const bf16* __restrict__ z,
                                                         const long long* __restrict__ targets,
                                                         float* __restrict__ nll, float* __restrict__ lse,
                                                         int V, float c) {
  extern __shared__ float y[];
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const bf16* zr = z + row * (long long)V;
  float m = __int_as_float(0xff800000);  // -inf
  if (V % 8 == 0) {
    const uint4* z8 = reinterpret_cast<const uint4*>(zr);
    for (int i = threadIdx.x; i < V / 8; i += blockDim.x) {
      uint4 v = z8[i];
      unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float a = c * tanhf(bf16_lo(w[k])), b = c * tanhf(bf16_hi(w[k]));
        y[8 * i + 2 * k] = a;
        y[8 * i + 2 * k + 1] = b;
        m = fmaxf(m, fmaxf(a, b));
      }
    }
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
      float a = c * tanhf(bf16_to_float(zr[j]));
      y[j] = a;
      m = fmaxf(m, a);
    }
  }
  m = block_max(m, scratch);  // its __syncthreads also publishes y
  float s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += __expf(y[j] - m);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const long long t = targets[row];
    const float l = m + __logf(s);
    lse[row] = l;
    nll[row] = (t >= 0 && t < V) ? l - y[t] : __int_as_float(0x7fc00000);
  }
}

// Grid: N blocks (one per row). g, lse: f32 [N]; dz: bf16 [N, V].
extern "C" __global__ void softcap_cross_entropy_backward(const bf16* __restrict__ z,
                                                          const long long* __restrict__ targets,
                                                          const float* __restrict__ g,
                                                          const float* __restrict__ lse,
                                                          bf16* __restrict__ dz, int V, float c) {
  const long long row = blockIdx.x;
  const bf16* zr = z + row * (long long)V;
  bf16* dr = dz + row * (long long)V;
  const long long t = targets[row];
  const float gi = g[row], l = lse[row];
  if (V % 8 == 0) {
    const uint4* z8 = reinterpret_cast<const uint4*>(zr);
    uint4* d8 = reinterpret_cast<uint4*>(dr);
    for (int i = threadIdx.x; i < V / 8; i += blockDim.x) {
      uint4 v = z8[i];
      unsigned int w[4] = {v.x, v.y, v.z, v.w};
      unsigned int out[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float d[2];
        float zz[2] = {bf16_lo(w[k]), bf16_hi(w[k])};
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = 8 * i + 2 * k + e;
          const float th = tanhf(zz[e]);
          const float p = __expf(c * th - l) - (j == t ? 1.0f : 0.0f);
          d[e] = gi * p * c * (1.0f - th * th);
        }
        out[k] = pack_bf16x2(d[0], d[1]);
      }
      d8[i] = make_uint4(out[0], out[1], out[2], out[3]);
    }
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
      const float th = tanhf(bf16_to_float(zr[j]));
      const float p = __expf(c * th - l) - (j == t ? 1.0f : 0.0f);
      dr[j] = (bf16)f32_to_bf16_bits(gi * p * c * (1.0f - th * th));
    }
  }
}
