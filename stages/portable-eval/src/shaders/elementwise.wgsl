// One invocation per element of a [rows, d] activation (row-major). The flat index spills into y
// past 65,535 workgroups (gpu.rs `groups_1d`); a window's position is row % t when the batch holds
// windows of t positions each.

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

//# kernel copy
struct Args { n: u32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> a: Args;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < a.n) { dst[i] = src[i]; }
}

//# kernel mean2
// dst = (p + q) / 2 (the parallel lanes' mean final lane).
struct Args { n: u32 }
@group(0) @binding(0) var<storage, read> p: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn mean2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < a.n) { dst[i] = 0.5 * (p[i] + q[i]); }
}

//# kernel scale
struct Args { n: u32, alpha: f32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> a: Args;

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < a.n) { x[i] = x[i] * a.alpha; }
}

//# kernel resid_mix
// h = mix[0] ⊙ h + mix[1] ⊙ x0 (resid_mix [2, d]).
struct Args { n: u32, d: u32 }
@group(0) @binding(0) var<storage, read> x0: array<f32>;
@group(0) @binding(1) var<storage, read> mix: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn resid_mix(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let c = i % a.d;
    h[i] = mix[c] * h[i] + mix[a.d + c] * x0[i];
}

//# kernel add_scaled
// h += alpha · s[s_off + c] · y (the per-column factor only when has_s is 1).
struct Args { n: u32, d: u32, s_off: u32, has_s: u32, alpha: f32 }
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn add_scaled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    var v = y[i];
    if (a.has_s == 1u) { v = s[a.s_off + i % a.d] * v; }
    h[i] = h[i] + a.alpha * v;
}

//# kernel skip_gate
// Gated skip merge: start = w ⊙ skip, h = start + σ(g) ⊙ (h − start) (w, g rows at off).
struct Args { n: u32, d: u32, off: u32 }
@group(0) @binding(0) var<storage, read> skip: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<uniform> a: Args;

@compute @workgroup_size(256)
fn skip_gate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let c = a.off + i % a.d;
    let start = w[c] * skip[i];
    h[i] = start + sigmoid(g[c]) * (h[i] - start);
}

//# kernel lanes
// The parallel lanes' update from a block's branches (scaled here by attn_scale, mlp_scale):
// lane0 = ρ0·lane0 + π00·a + π10·m, lane1 = ρ1·lane1 + π01·a + π11·m.
struct Args { n: u32, d: u32, r0: f32, r1: f32, p0: f32, p1: f32, p2: f32, p3: f32 }
@group(0) @binding(0) var<storage, read> br_a: array<f32>;
@group(0) @binding(1) var<storage, read> br_m: array<f32>;
@group(0) @binding(2) var<storage, read> s_a: array<f32>;
@group(0) @binding(3) var<storage, read> s_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> lane0: array<f32>;
@group(0) @binding(5) var<storage, read_write> lane1: array<f32>;
@group(0) @binding(6) var<uniform> a: Args;

@compute @workgroup_size(256)
fn lanes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let c = i % a.d;
    let av = br_a[i] * s_a[c];
    let mv = br_m[i] * s_m[c];
    let l0 = lane0[i];
    let l1 = lane1[i];
    lane0[i] = a.r0 * l0 + a.p0 * av + a.p2 * mv;
    lane1[i] = a.r1 * l1 + a.p1 * av + a.p3 * mv;
}

//# kernel activation
// relu² (slope 0) or leaky_relu(·, slope)².
struct Args { n: u32, slope: f32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> a: Args;

@compute @workgroup_size(256)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    var v = x[i];
    if (!(v > 0.0)) { v = v * a.slope; }
    x[i] = v * v;
}

//# kernel embed
// dst[r, :] = table[ids[r], :].
struct Args { n: u32, width: u32 }
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    dst[i] = table[ids[i / a.width] * a.width + i % a.width];
}

//# kernel bigram_embed
// BigramHash rows: position 0 of a window → bucket B−1, position p → (36313·x_p XOR 27191·x_{p−1})
// mod (B−1) in wrapping i32 arithmetic, the remainder taken non-negative (R0322's hash).
struct Args { n: u32, width: u32, t: u32, buckets: u32 }
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn bigram_embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let r = i / a.width;
    let m = i32(a.buckets) - 1;
    var bucket = m;
    if (r % a.t != 0u) {
        let h = (36313 * i32(ids[r])) ^ (27191 * i32(ids[r - 1u]));
        bucket = ((h % m) + m) % m;
    }
    dst[i] = table[u32(bucket) * a.width + i % a.width];
}

//# kernel smear_v1
// SmearGate v1: dst_t = (1 − σ(g)) ⊙ x_t + σ(g) ⊙ x_{t−1}, x_{−1} = 0 (positions within a window).
struct Args { n: u32, d: u32, t: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn smear_v1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let g = sigmoid(gate[i % a.d]);
    var prev = 0.0;
    if ((i / a.d) % a.t != 0u) { prev = x[i - a.d]; }
    dst[i] = (1.0 - g) * x[i] + g * prev;
}

//# kernel smear_v2
// SmearGate v2 on the raw embedding: for positions p ≥ 1 whose token is not bos,
// dst_p = x_p + λ·σ(w · x_p[0:window])·x_{p−1}; otherwise dst_p = x_p.
struct Args { n: u32, d: u32, t: u32, window: u32, bos: u32, lambda: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<uniform> a: Args;

@compute @workgroup_size(256)
fn smear_v2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    let r = i / a.d;
    var v = x[i];
    if (r % a.t != 0u && ids[r] != a.bos) {
        var z = 0.0;
        for (var c = 0u; c < a.window; c++) {
            z = fma(w[c], x[r * a.d + c], z);
        }
        v = v + a.lambda * sigmoid(z) * x[i - a.d];
    }
    dst[i] = v;
}

//# kernel gather_rows
// dst[c, :] = src[rows[c], :] (the scored positions, gathered for the head).
struct Args { n: u32, d: u32 }
@group(0) @binding(0) var<storage, read> rows: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= a.n) { return; }
    dst[i] = src[rows[i / a.d] * a.d + i % a.d];
}
