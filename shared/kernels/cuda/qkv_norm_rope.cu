// Per-head RMSNorm (no weight) + half-split RoPE over the first rd dims of each head (partial RoPE;
// rd = hd rotates the whole head) + per-head q gain over the fused QKV GEMM output, forward and
// backward, in one pass each. Header-free for NVRTC: bf16 travels as unsigned short (helpers from
// common.cuh).
//
// Layout: qkv is [N, W] bf16 row-major, N = B·T rows (row n is position t = n mod T), W = (H + 2·Hkv)·hd:
// q heads, then k heads, then v heads. One thread owns 8 consecutive elements (one 16-byte access) of
// one head of one row, so a head is held by tph = hd/8 neighbouring lanes (hd ∈ {16, 32, 64, 128, 256}:
// tph is a power of two ≤ 32 and a head never straddles a warp). The rotated dims are held by the
// head's first rl = rd/8 lanes (rd a multiple of 16, so each half of them is rh = rl/2 whole lanes);
// the RoPE partner of element i < rd/2 is i + rd/2, which sits in lane ± rh: one shuffle per value
// (for rd = hd that lane is lane ^ (tph/2), the same values as a butterfly shuffle: bit-identical to
// the whole-head kernel). Lanes past rl pass their normalised values through. A block holds
// rows_per_block whole rows; blocks stride over rows. Every thread of a block runs the same number of
// iterations (the loop bound is per block, rows past N are masked), so full-warp shuffles are always
// legal.
//
// Math (f32 throughout, one rounding to bf16 per output), per q or k head of a row, g = q_gain[h]
// for q heads and 1 for k heads, (c, s) = the tables [T, rd/2] at (t, i mod rd/2):
//   r = 1/sqrt(mean(x²) + eps) (the mean over all hd dims),  x̂ = r·x
//   u = R x̂:  u_i = c·x̂_i + s·x̂_{i+rd/2},  u_{i+rd/2} = −s·x̂_i + c·x̂_{i+rd/2}    (i < rd/2)
//             u_i = x̂_i                                                         (rd ≤ i < hd)
//   y = g·u
// Backward from dy:
//   dg   += Σ_i dy_i·u_i                      (q heads; per-block partial sums, no atomics)
//   du    = g·dy
//   dx̂    = Rᵀ du:  dx̂_i = c·du_i − s·du_{i+rd/2},  dx̂_{i+rd/2} = s·du_i + c·du_{i+rd/2},  dx̂_i = du_i (i ≥ rd)
//   dx    = r·(dx̂ − x̂·mean(dx̂·x̂)),  and mean(dx̂·x̂) = mean(du·R x̂) = g·Σ(dy·u)/hd  (R linear)
// so the one head-wide dot product Σ dy·u serves both the gain gradient and the norm backward.
// v heads are copied through (forward) and their gradient copied back (backward), so this op owns
// the whole d(qkv) and writes it in one pass.

// Sum over the tph lanes of one head (they are aligned groups of a power-of-two size).
__device__ __forceinline__ float head_sum(float v, int tph) {
    for (int off = 1; off < tph; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// The forward math of one thread's 8 elements of a q or k head: x̂ (xh), u = R x̂ before the gain,
// the tables (c, s), r, the sign of the partner term (+1 in the first half of the rotated dims, −1
// in the second), whether the thread's elements are rotated, and the warp lane of its partner.
// Every lane must call it (it shuffles), masked rows and v heads included.
__device__ __forceinline__ void normalise_rotate(uint4 raw, const float* __restrict__ cos_t,
                                                 const float* __restrict__ sin_t, int t, int hd,
                                                 int rd, int tph, int lane, float eps, float* xh,
                                                 float* u, float* c, float* s, float* r_out,
                                                 float* sgn_out, bool* rotated_out,
                                                 int* partner_out) {
    float x[8];
    unpack8(raw, x);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) ss = fmaf(x[i], x[i], ss);
    ss = head_sum(ss, tph);
    const float r = rsqrtf(ss / (float)hd + eps);
#pragma unroll
    for (int i = 0; i < 8; ++i) xh[i] = x[i] * r;
    const int half_lanes = rd >> 4;  // lanes per half of the rotated dims
    const bool rotated = lane < 2 * half_lanes;
    const int partner_lane = !rotated ? lane : (lane < half_lanes ? lane + half_lanes : lane - half_lanes);
    const int partner = (int)(threadIdx.x & 31) - lane + partner_lane;
    float xp[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) xp[i] = __shfl_sync(0xffffffffu, xh[i], partner);
    const float sgn = lane < half_lanes ? 1.f : -1.f;
    if (rotated) {
        const int half = rd >> 1;
        const int f0 = (lane % half_lanes) * 8;
        load8_f32(cos_t + (long long)t * half + f0, c);
        load8_f32(sin_t + (long long)t * half + f0, s);
#pragma unroll
        for (int i = 0; i < 8; ++i) u[i] = fmaf(xh[i], c[i], sgn * xp[i] * s[i]);
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            c[i] = 1.f;
            s[i] = 0.f;
            u[i] = xh[i];
        }
    }
    *r_out = r;
    *sgn_out = sgn;
    *rotated_out = rotated;
    *partner_out = partner;
}

// Where this thread's 8 elements sit in each row it visits, and their head's gain: the same in
// forward and backward (block: rows_per_block whole rows of row_threads threads each).
struct Slot {
    int tph;             // threads per head: hd/8
    int W;               // elements per row
    int row_threads;     // threads per row: W/8
    int rows_per_block;
    int row_in_block;
    int local;           // the elements local·8 .. local·8 + 7 of the row
    int head;            // of the row's q heads, then k heads, then v heads
    int lane;            // the thread's index among its head's tph threads
    bool is_q, is_k;
    float g;             // q_gain of a q head, 1 for the others
};

__device__ __forceinline__ Slot slot_of(const float* __restrict__ q_gain, int n_heads, int n_kv_heads,
                                        int hd) {
    Slot my;
    my.tph = hd >> 3;
    my.W = (n_heads + 2 * n_kv_heads) * hd;
    my.row_threads = my.W >> 3;
    my.rows_per_block = blockDim.x / my.row_threads;
    my.local = threadIdx.x % my.row_threads;
    my.row_in_block = threadIdx.x / my.row_threads;
    my.head = my.local / my.tph;
    my.lane = my.local % my.tph;
    my.is_q = my.head < n_heads;
    my.is_k = !my.is_q && my.head < n_heads + n_kv_heads;
    my.g = my.is_q ? q_gain[my.head] : 1.f;
    return my;
}

// Grid: any number of blocks; block: rows_per_block·(W/8) threads (the launcher's contract).
// Outputs q [N, H, hd], k [N, Hkv, hd], v [N, Hkv, hd], contiguous.
extern "C" __global__ void qkv_norm_rope_forward(
    const unsigned short* __restrict__ qkv, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, const float* __restrict__ q_gain,
    unsigned short* __restrict__ q, unsigned short* __restrict__ k, unsigned short* __restrict__ v,
    long long n_rows, int seq_len, int n_heads, int n_kv_heads, int hd, int rd, float eps) {
    const Slot my = slot_of(q_gain, n_heads, n_kv_heads, hd);
    for (long long base = (long long)blockIdx.x * my.rows_per_block; base < n_rows;
         base += (long long)gridDim.x * my.rows_per_block) {
        const long long row = base + my.row_in_block;
        const bool valid = row < n_rows;
        uint4 raw = make_uint4(0u, 0u, 0u, 0u);
        if (valid) raw = *reinterpret_cast<const uint4*>(qkv + row * my.W + my.local * 8);
        const int t = (int)(row % seq_len);
        float xh[8], u[8], c[8], s[8], r, sgn;
        bool rotated;
        int partner;
        normalise_rotate(raw, cos_t, sin_t, t, hd, rd, my.tph, my.lane, eps, xh, u, c, s, &r, &sgn,
                         &rotated, &partner);
        if (!valid) continue;
        if (my.is_q) {
#pragma unroll
            for (int i = 0; i < 8; ++i) u[i] *= my.g;
            *reinterpret_cast<uint4*>(q + (row * n_heads + my.head) * hd + my.lane * 8) = pack8(u);
        } else if (my.is_k) {
            *reinterpret_cast<uint4*>(k + (row * n_kv_heads + my.head - n_heads) * hd +
                                      my.lane * 8) = pack8(u);
        } else {
            *reinterpret_cast<uint4*>(
                v + (row * n_kv_heads + my.head - n_heads - n_kv_heads) * hd + my.lane * 8) = raw;
        }
    }
}

// Gradients dq [B, T, H, hd], dk and dv [B, T, Hkv, hd] with element strides (b, t, head) and a
// unit last stride (all strides multiples of 8, base pointers 16-byte aligned: the launcher's
// contract). Writes d(qkv) [N, W] and the per-block partial sums of d(q_gain): [gridDim.x, H].
// Block size ≤ 1024.
extern "C" __global__ void qkv_norm_rope_backward(
    const unsigned short* __restrict__ qkv, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, const float* __restrict__ q_gain,
    const unsigned short* __restrict__ dq, long long dq_sb, long long dq_st, long long dq_sh,
    const unsigned short* __restrict__ dk, long long dk_sb, long long dk_st, long long dk_sh,
    const unsigned short* __restrict__ dv, long long dv_sb, long long dv_st, long long dv_sh,
    unsigned short* __restrict__ dqkv, float* __restrict__ dgain_partial, long long n_rows,
    int seq_len, int n_heads, int n_kv_heads, int hd, int rd, float eps) {
    __shared__ float block_acc[1024];
    const Slot my = slot_of(q_gain, n_heads, n_kv_heads, hd);
    const float inv_hd = 1.f / (float)hd;
    const unsigned short* grad;
    long long sb, st;
    if (my.is_q) {
        grad = dq + my.head * dq_sh;
        sb = dq_sb;
        st = dq_st;
    } else if (my.is_k) {
        grad = dk + (my.head - n_heads) * dk_sh;
        sb = dk_sb;
        st = dk_st;
    } else {
        grad = dv + (my.head - n_heads - n_kv_heads) * dv_sh;
        sb = dv_sb;
        st = dv_st;
    }
    grad += my.lane * 8;
    float acc = 0.f;  // Σ dy·u of this head over this thread's rows (used by q heads' lane 0)
    for (long long base = (long long)blockIdx.x * my.rows_per_block; base < n_rows;
         base += (long long)gridDim.x * my.rows_per_block) {
        const long long row = base + my.row_in_block;
        const bool valid = row < n_rows;
        const long long b = row / seq_len;
        const int t = (int)(row - b * seq_len);
        uint4 raw = make_uint4(0u, 0u, 0u, 0u), graw = make_uint4(0u, 0u, 0u, 0u);
        if (valid) {
            raw = *reinterpret_cast<const uint4*>(qkv + row * my.W + my.local * 8);
            graw = *reinterpret_cast<const uint4*>(grad + b * sb + t * st);
        }
        float xh[8], u[8], c[8], s[8], r, sgn;
        bool rotated;
        int partner;
        normalise_rotate(raw, cos_t, sin_t, t, hd, rd, my.tph, my.lane, eps, xh, u, c, s, &r, &sgn,
                         &rotated, &partner);
        float dy[8];
        unpack8(graw, dy);
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(dy[i], u[i], dot);
        dot = head_sum(dot, my.tph);
        if (my.is_q && my.lane == 0) acc += dot;
        float du[8], dup[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) du[i] = my.g * dy[i];
#pragma unroll
        for (int i = 0; i < 8; ++i) dup[i] = __shfl_sync(0xffffffffu, du[i], partner);
        const float mean = my.g * dot * inv_hd;
        float dx[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float dxh = rotated ? fmaf(du[i], c[i], -sgn * dup[i] * s[i]) : du[i];
            dx[i] = r * fmaf(-xh[i], mean, dxh);
        }
        if (!valid) continue;
        *reinterpret_cast<uint4*>(dqkv + row * my.W + my.local * 8) =
            (my.is_q || my.is_k) ? pack8(dx) : graw;
    }
    // Fixed-order block reduction of the gain partials: deterministic run to run.
    block_acc[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < n_heads) {
        float sum = 0.f;
        for (int rb = 0; rb < my.rows_per_block; ++rb)
            sum += block_acc[rb * my.row_threads + threadIdx.x * my.tph];
        dgain_partial[(long long)blockIdx.x * n_heads + threadIdx.x] = sum;
    }
}
