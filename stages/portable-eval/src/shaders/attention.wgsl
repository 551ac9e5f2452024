// Attention, per head vectors of HD (the head dim, substituted when the model loads) f32s. A batch
// holds windows of t positions each: row r is position r % t of window r / t. q is [rows, H·HD],
// k and v [rows, Hkv·HD]; query head h reads kv head h / (H / Hkv).

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

//# kernel qk_norm_rope
// Per head vector: RMS norm (ε the f32 machine epsilon), half-split RoPE over its first 2·half
// dims (x1·cos + x2·sin, x2·cos − x1·sin; the rest pass through), times gain[head] when has_gain.
struct Args { vecs: u32, heads: u32, hd: u32, half: u32, t: u32, has_gain: u32 }
@group(0) @binding(0) var<storage, read> cos_t: array<f32>;
@group(0) @binding(1) var<storage, read> sin_t: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<uniform> a: Args;

@compute @workgroup_size(64)
fn qk_norm_rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= a.vecs) { return; }
    let base = i * a.hd;
    let head = i % a.heads;
    let pos = (i / a.heads) % a.t;
    var ss = 0.0;
    for (var d = 0u; d < a.hd; d++) {
        let v = x[base + d];
        ss = fma(v, v, ss);
    }
    let r = 1.0 / sqrt(ss / f32(a.hd) + 1.1920929e-07);
    var g = 1.0;
    if (a.has_gain == 1u) { g = gain[head]; }
    for (var j = 0u; j < a.half; j++) {
        let c = cos_t[pos * a.half + j];
        let s = sin_t[pos * a.half + j];
        let x1 = x[base + j] * r;
        let x2 = x[base + a.half + j] * r;
        x[base + j] = (x1 * c + x2 * s) * g;
        x[base + a.half + j] = (x2 * c - x1 * s) * g;
    }
    for (var d = 2u * a.half; d < a.hd; d++) {
        x[base + d] = x[base + d] * r * g;
    }
}

//# kernel attention
// Causal softmax(q kᵀ · scale) v without a t×t matrix: a workgroup takes BQ consecutive queries of
// one head of one window (one query per invocation, its q and output accumulator in registers)
// and streams the keys up to its last query through workgroup memory BK at a time, keeping a
// running max and sum (online softmax, rescaled once per block).
const HD: u32 = {{HD}}u;
const BK: u32 = {{BK}}u;
const BQ: u32 = 64u;
struct Args { t: u32, heads: u32, kv_heads: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> a: Args;

var<workgroup> ks: array<f32, BK * HD>;
var<workgroup> vs: array<f32, BK * HD>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let t = a.t;
    let win = wg.z;
    let head = wg.y;
    let kvh = head / (a.heads / a.kv_heads);
    let i = wg.x * BQ + li;
    let valid = i < t;
    let qw = a.heads * HD;
    let kw = a.kv_heads * HD;
    var qv: array<f32, HD>;
    var acc: array<f32, HD>;
    if (valid) {
        let qb = (win * t + i) * qw + head * HD;
        for (var d = 0u; d < HD; d++) { qv[d] = q[qb + d]; }
    }
    var m = -3.4028235e38;
    var l = 0.0;
    let kend = min(wg.x * BQ + BQ, t);
    for (var k0 = 0u; k0 < kend; k0 += BK) {
        for (var e = li; e < BK * HD; e += BQ) {
            let key = k0 + e / HD;
            var kv = 0.0;
            var vv = 0.0;
            if (key < t) {
                let off = (win * t + key) * kw + kvh * HD + e % HD;
                kv = k[off];
                vv = v[off];
            }
            ks[e] = kv;
            vs[e] = vv;
        }
        workgroupBarrier();
        if (valid && k0 <= i) {
            let jn = min(BK, i + 1u - k0);
            var s: array<f32, BK>;
            var bm = m;
            for (var j = 0u; j < jn; j++) {
                var dot = 0.0;
                for (var d = 0u; d < HD; d++) { dot = fma(qv[d], ks[j * HD + d], dot); }
                dot = dot * a.scale;
                s[j] = dot;
                bm = max(bm, dot);
            }
            let c = exp(m - bm);
            l = l * c;
            for (var d = 0u; d < HD; d++) { acc[d] = acc[d] * c; }
            for (var j = 0u; j < jn; j++) {
                let p = exp(s[j] - bm);
                l = l + p;
                for (var d = 0u; d < HD; d++) { acc[d] = fma(p, vs[j * HD + d], acc[d]); }
            }
            m = bm;
        }
        workgroupBarrier();
    }
    if (valid) {
        let yb = (win * t + i) * qw + head * HD;
        for (var d = 0u; d < HD; d++) { y[yb + d] = acc[d] / l; }
    }
}

//# kernel xsa
// XSA: each head's output loses its component along its kv head's normalised value,
// y ← y − (y·v̂) v̂ with v̂ = v / max(‖v‖, 1e-12).
struct Args { vecs: u32, heads: u32, kv_heads: u32, hd: u32 }
@group(0) @binding(0) var<storage, read> v: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> a: Args;

@compute @workgroup_size(64)
fn xsa(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= a.vecs) { return; }
    let row = i / a.heads;
    let head = i % a.heads;
    let yb = i * a.hd;
    let vb = (row * a.kv_heads + head / (a.heads / a.kv_heads)) * a.hd;
    var nn = 0.0;
    for (var d = 0u; d < a.hd; d++) { nn = fma(v[vb + d], v[vb + d], nn); }
    let norm = max(sqrt(nn), 1e-12);
    var along = 0.0;
    for (var d = 0u; d < a.hd; d++) { along = fma(y[yb + d], v[vb + d] / norm, along); }
    for (var d = 0u; d < a.hd; d++) { y[yb + d] = y[yb + d] - along * (v[vb + d] / norm); }
}

//# kernel head_gate
// Attention output gate: head h of row r times σ(s · w_h · u_r[0:n]).
struct Args { vecs: u32, heads: u32, hd: u32, d: u32, n: u32, s: f32 }
@group(0) @binding(0) var<storage, read> u: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(64)
fn head_gate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= a.vecs) { return; }
    let row = i / a.heads;
    let head = i % a.heads;
    var z = 0.0;
    for (var c = 0u; c < a.n; c++) { z = fma(u[row * a.d + c], w[head * a.n + c], z); }
    let g = sigmoid(a.s * z);
    for (var d = 0u; d < a.hd; d++) { y[i * a.hd + d] = y[i * a.hd + d] * g; }
}
