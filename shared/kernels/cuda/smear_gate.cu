// SmearGate v1 (R0322's `SmearGate`): each position mixed with the previous one by a per-channel
// gate, forward and backward in one pass each. Header-free for NVRTC: bf16 travels as unsigned
// short (helpers from common.cuh).
//
// Layout: x [N, d] bf16 row-major, N = B·T rows (row n is position t = n mod T; position 0 has no
// previous row: x_{−1} = 0), gate [d] f32 (the parameter; σ is applied here). One thread owns 8
// consecutive columns (one 16-byte access) of one row: a block holds rows_per_block rows of d/8
// threads (d a multiple of 8, at most 2048: a row fits the backward's block) and strides over rows.
//
// Math (f32, one rounding to bf16 per output), s = σ(g):
//   out_t = (1 − s)·x_t + s·x_{t−1}
// Backward from dout:
//   dx_t = (1 − s)·dout_t + s·dout_{t+1}                (dout_T = 0: the last position feeds none)
//   dg   = s·(1 − s)·Σ_rows dout_t·(x_{t−1} − x_t)
// The gate gradient is written as per-block partial sums [gridDim.x, d] (the block's rows summed
// in fixed order through shared memory), reduced by the caller: deterministic, no atomics.

#define SMEAR_MAX_THREADS 256  // the launcher's largest block (shared memory of the backward)

__device__ __forceinline__ void smear_gate_of(const float* __restrict__ gate, int col, float* s) {
    float g[8];
    load8_f32(gate + col, g);
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = 1.f / (1.f + expf(-g[i]));
}

__device__ __forceinline__ void smear_load(const unsigned short* p, float* f) {
    unpack8(*reinterpret_cast<const uint4*>(p), f);
}

// Grid: any number of blocks; block: rows_per_block·(d/8) threads.
extern "C" __global__ void smear_gate_forward(const unsigned short* __restrict__ x,
                                              const float* __restrict__ gate,
                                              unsigned short* __restrict__ out, long long n_rows,
                                              int seq_len, int d) {
    const int row_threads = d >> 3;
    const int rows_per_block = blockDim.x / row_threads;
    const int col = (threadIdx.x % row_threads) * 8;
    const int row_in_block = threadIdx.x / row_threads;
    if (row_in_block >= rows_per_block) return;  // threads past whole rows (none by contract)
    float s[8];
    smear_gate_of(gate, col, s);
    for (long long row = (long long)blockIdx.x * rows_per_block + row_in_block; row < n_rows;
         row += (long long)gridDim.x * rows_per_block) {
        const bool first = row % seq_len == 0;
        float cur[8], prev[8], o[8];
        smear_load(x + row * d + col, cur);
        if (first) {
#pragma unroll
            for (int i = 0; i < 8; ++i) prev[i] = 0.f;
        } else {
            smear_load(x + (row - 1) * d + col, prev);
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = fmaf(1.f - s[i], cur[i], s[i] * prev[i]);
        *reinterpret_cast<uint4*>(out + row * d + col) = pack8(o);
    }
}

// Writes dx [N, d] and dgate_partial [gridDim.x, d]. Block ≤ SMEAR_MAX_THREADS threads.
extern "C" __global__ void smear_gate_backward(const unsigned short* __restrict__ x,
                                               const float* __restrict__ gate,
                                               const unsigned short* __restrict__ dout,
                                               unsigned short* __restrict__ dx,
                                               float* __restrict__ dgate_partial,
                                               long long n_rows, int seq_len, int d) {
    __shared__ float block_acc[SMEAR_MAX_THREADS * 8];
    const int row_threads = d >> 3;
    const int rows_per_block = blockDim.x / row_threads;
    const int col = (threadIdx.x % row_threads) * 8;
    const int row_in_block = threadIdx.x / row_threads;
    const bool active = row_in_block < rows_per_block;
    float s[8], acc[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = 0.f;
    if (active) {
        smear_gate_of(gate, col, s);
        for (long long row = (long long)blockIdx.x * rows_per_block + row_in_block; row < n_rows;
             row += (long long)gridDim.x * rows_per_block) {
            const long long t = row % seq_len;
            float cur[8], prev[8], g[8], gnext[8], o[8];
            smear_load(x + row * d + col, cur);
            smear_load(dout + row * d + col, g);
            if (t == 0) {
#pragma unroll
                for (int i = 0; i < 8; ++i) prev[i] = 0.f;
            } else {
                smear_load(x + (row - 1) * d + col, prev);
            }
            if (t == seq_len - 1) {
#pragma unroll
                for (int i = 0; i < 8; ++i) gnext[i] = 0.f;
            } else {
                smear_load(dout + (row + 1) * d + col, gnext);
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                o[i] = fmaf(1.f - s[i], g[i], s[i] * gnext[i]);
                acc[i] = fmaf(g[i], prev[i] - cur[i], acc[i]);
            }
            *reinterpret_cast<uint4*>(dx + row * d + col) = pack8(o);
        }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) block_acc[threadIdx.x * 8 + i] = acc[i];
    __syncthreads();
    // Column c of the partial: the block's rows in fixed order, then the chain rule through σ.
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        const int owner = c >> 3, i = c & 7;
        float sum = 0.f;
        for (int r = 0; r < rows_per_block; ++r) sum += block_acc[(r * row_threads + owner) * 8 + i];
        const float sg = 1.f / (1.f + expf(-gate[c]));
        dgate_partial[(long long)blockIdx.x * d + c] = sg * (1.f - sg) * sum;
    }
}
