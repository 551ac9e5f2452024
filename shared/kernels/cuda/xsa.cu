// XSA (R0322's `_xsa_efficient`): each attention head's output loses its component along its kv
// head's normalised value, forward and backward in one pass each. Header-free for NVRTC: bf16
// travels as unsigned short (helpers from common.cuh).
//
// Layout: y [B, T, H, hd] bf16 with element strides (b, t, h) and a unit last stride (SDPA's output
// [B, H, T, hd] seen through transpose(1, 2), or contiguous); v [B, T, Hkv, hd] contiguous; q head h
// reads kv head h / G, G = H/Hkv (GQA). One thread owns 8 consecutive elements (one 16-byte access)
// of one kv head of one row (row n = b·T + t), so a kv head is held by tph = hd/8 neighbouring lanes
// (hd ∈ {16, 32, 64, 128, 256}: tph a power of two ≤ 32, a head never straddles a warp), and the
// thread loops over its kv head's G q heads: v is read once per row, y and the gradients once. A
// block holds rows_per_block whole rows of Hkv·hd/8 threads; blocks stride over rows; the loop
// bound is per block (rows past N are masked), so full-warp shuffles are always legal.
//
// Math (f32, one rounding to bf16 per output), per row, kv head and q head h of its group:
//   n = max(‖v‖, 1e-12),  v̂ = v/n,  a_h = y_h·v̂,  out_h = y_h − a_h·v̂
// Backward from g_h = d out_h (out = P y with P = I − v̂v̂ᵀ symmetric):
//   dy_h = g_h − (g_h·v̂)·v̂
//   dv̂   = −Σ_h [(g_h·v̂)·y_h + a_h·g_h]
//   dv   = (dv̂ − v̂·(v̂·dv̂))/n    when ‖v‖ ≥ 1e-12 (the Jacobian of v/‖v‖),
//   dv   = dv̂/n                  when clamped (n constant: torch's clamp_min passes no gradient)

#define XSA_MIN_NORM 1e-12f

// Sum over the tph lanes of one head (they are aligned groups of a power-of-two size).
__device__ __forceinline__ float xsa_head_sum(float v, int tph) {
    for (int off = 1; off < tph; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Where this thread's 8 elements sit in each row it visits (the same in forward and backward).
struct XsaSlot {
    int tph;             // threads per head: hd/8
    int row_threads;     // threads per row: Hkv·hd/8
    int rows_per_block;
    int row_in_block;
    int kv_head;
    int lane;            // the thread's index among its head's tph threads
};

__device__ __forceinline__ XsaSlot xsa_slot(int n_kv_heads, int hd) {
    XsaSlot my;
    my.tph = hd >> 3;
    my.row_threads = n_kv_heads * my.tph;
    my.rows_per_block = blockDim.x / my.row_threads;
    const int local = threadIdx.x % my.row_threads;
    my.row_in_block = threadIdx.x / my.row_threads;
    my.kv_head = local / my.tph;
    my.lane = local % my.tph;
    return my;
}

// v̂ of one thread's 8 elements, n and whether n is the clamp. Every lane must call it (it
// shuffles), masked rows included (their v is zeros).
__device__ __forceinline__ void xsa_unit(uint4 raw, int tph, float* vh, float* n_out,
                                         bool* clamped_out) {
    float v[8];
    unpack8(raw, v);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) ss = fmaf(v[i], v[i], ss);
    const float norm = sqrtf(xsa_head_sum(ss, tph));
    const bool clamped = !(norm >= XSA_MIN_NORM);
    const float n = clamped ? XSA_MIN_NORM : norm;
#pragma unroll
    for (int i = 0; i < 8; ++i) vh[i] = v[i] / n;
    *n_out = n;
    *clamped_out = clamped;
}

// Grid: any number of blocks; block: rows_per_block·(Hkv·hd/8) threads, whole warps (the
// launcher's contract). out [B, T, H, hd] contiguous.
extern "C" __global__ void xsa_forward(const unsigned short* __restrict__ y, long long y_sb,
                                       long long y_st, long long y_sh,
                                       const unsigned short* __restrict__ v,
                                       unsigned short* __restrict__ out, long long n_rows,
                                       int seq_len, int n_heads, int n_kv_heads, int hd) {
    const XsaSlot my = xsa_slot(n_kv_heads, hd);
    const int group = n_heads / n_kv_heads;
    for (long long base = (long long)blockIdx.x * my.rows_per_block; base < n_rows;
         base += (long long)gridDim.x * my.rows_per_block) {
        const long long row = base + my.row_in_block;
        const bool valid = row < n_rows;
        const long long b = row / seq_len;
        const long long t = row - b * seq_len;
        uint4 vraw = make_uint4(0u, 0u, 0u, 0u);
        if (valid)
            vraw = *reinterpret_cast<const uint4*>(v + (row * n_kv_heads + my.kv_head) * hd +
                                                   my.lane * 8);
        float vh[8], n;
        bool clamped;
        xsa_unit(vraw, my.tph, vh, &n, &clamped);
        for (int j = 0; j < group; ++j) {
            const int h = my.kv_head * group + j;
            uint4 yraw = make_uint4(0u, 0u, 0u, 0u);
            if (valid)
                yraw = *reinterpret_cast<const uint4*>(y + b * y_sb + t * y_st + h * y_sh +
                                                       my.lane * 8);
            float yv[8];
            unpack8(yraw, yv);
            float a = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) a = fmaf(yv[i], vh[i], a);
            a = xsa_head_sum(a, my.tph);
            float o[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) o[i] = fmaf(-a, vh[i], yv[i]);
            if (valid)
                *reinterpret_cast<uint4*>(out + (row * n_heads + h) * hd + my.lane * 8) = pack8(o);
        }
    }
}

// Gradients: g = d out [B, T, H, hd] with element strides (b, t, h), unit last stride; writes dy
// with its own strides (y's layout when dense, so SDPA's backward gets its output's layout) and dv
// [B, T, Hkv, hd] contiguous. Same geometry as the forward.
extern "C" __global__ void xsa_backward(
    const unsigned short* __restrict__ y, long long y_sb, long long y_st, long long y_sh,
    const unsigned short* __restrict__ v, const unsigned short* __restrict__ g, long long g_sb,
    long long g_st, long long g_sh, unsigned short* __restrict__ dy, long long dy_sb,
    long long dy_st, long long dy_sh, unsigned short* __restrict__ dv, long long n_rows,
    int seq_len, int n_heads, int n_kv_heads, int hd) {
    const XsaSlot my = xsa_slot(n_kv_heads, hd);
    const int group = n_heads / n_kv_heads;
    for (long long base = (long long)blockIdx.x * my.rows_per_block; base < n_rows;
         base += (long long)gridDim.x * my.rows_per_block) {
        const long long row = base + my.row_in_block;
        const bool valid = row < n_rows;
        const long long b = row / seq_len;
        const long long t = row - b * seq_len;
        const long long v_at = (row * n_kv_heads + my.kv_head) * hd + my.lane * 8;
        uint4 vraw = make_uint4(0u, 0u, 0u, 0u);
        if (valid) vraw = *reinterpret_cast<const uint4*>(v + v_at);
        float vh[8], n;
        bool clamped;
        xsa_unit(vraw, my.tph, vh, &n, &clamped);
        float dvh[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) dvh[i] = 0.f;
        for (int j = 0; j < group; ++j) {
            const int h = my.kv_head * group + j;
            uint4 yraw = make_uint4(0u, 0u, 0u, 0u), graw = make_uint4(0u, 0u, 0u, 0u);
            if (valid) {
                yraw = *reinterpret_cast<const uint4*>(y + b * y_sb + t * y_st + h * y_sh +
                                                       my.lane * 8);
                graw = *reinterpret_cast<const uint4*>(g + b * g_sb + t * g_st + h * g_sh +
                                                       my.lane * 8);
            }
            float yv[8], gv[8];
            unpack8(yraw, yv);
            unpack8(graw, gv);
            float a = 0.f, bd = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                a = fmaf(yv[i], vh[i], a);
                bd = fmaf(gv[i], vh[i], bd);
            }
            a = xsa_head_sum(a, my.tph);
            bd = xsa_head_sum(bd, my.tph);
            float d[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                d[i] = fmaf(-bd, vh[i], gv[i]);
                dvh[i] -= fmaf(a, gv[i], bd * yv[i]);
            }
            if (valid)
                *reinterpret_cast<uint4*>(dy + b * dy_sb + t * dy_st + h * dy_sh + my.lane * 8) =
                    pack8(d);
        }
        float c = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) c = fmaf(vh[i], dvh[i], c);
        c = xsa_head_sum(c, my.tph);
        float d[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) d[i] = (clamped ? dvh[i] : fmaf(-vh[i], c, dvh[i])) / n;
        if (valid) *reinterpret_cast<uint4*>(dv + v_at) = pack8(d);
    }
}
