// y = x wᵀ for x [m, k], w [n, k] (a Linear weight: one row per output feature), y [m, n], all
// row-major f32. 64×64 output tiles, 16-deep slices of k staged in workgroup memory; each of the
// 256 invocations accumulates a 4×4 block strided by 16 rows and columns (conflict-free reads of
// the staged tiles, consecutive invocations write consecutive columns).

//# kernel gemm
struct Args { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 1024>; // [TK][TM]
var<workgroup> ws: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < a.k; k0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / TK;
            let c = idx % TK;
            let gk = k0 + c;
            var xv = 0.0;
            var wv = 0.0;
            if (gk < a.k) {
                if (row0 + r < a.m) { xv = x[(row0 + r) * a.k + gk]; }
                if (col0 + r < a.n) { wv = w[(col0 + r) * a.k + gk]; }
            }
            xs[c * TM + r] = xv;
            ws[c * TN + r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var xr: array<f32, 4>;
            var wr: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                xr[i] = xs[kk * TM + l.y + 16u * i];
                wr[i] = ws[kk * TN + l.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(xr[i], wr[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + l.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + l.x + 16u * j;
            if (r < a.m && c < a.n) { y[r * a.n + c] = acc[i * 4u + j]; }
        }
    }
}
