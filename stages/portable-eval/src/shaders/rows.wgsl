// Reductions along rows: one workgroup per row, its invocations striding over the columns, then a
// tree sum in workgroup memory. Rows past 65,535 spill into the y dimension of the dispatch.

//# kernel rms_norm
// y = s · (w ⊙ x / √(mean(x²) + ε)) per row, ε the f32 machine epsilon (torch's rms_norm default);
// w only when has_w is 1.
struct Args { rows: u32, width: u32, has_w: u32, s: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= a.rows) { return; }
    let base = row * a.width;
    var ss = 0.0;
    for (var c = li; c < a.width; c += 64u) {
        let v = x[base + c];
        ss = fma(v, v, ss);
    }
    part[li] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (li < s) { part[li] = part[li] + part[li + s]; }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(part[0] / f32(a.width) + 1.1920929e-07);
    for (var c = li; c < a.width; c += 64u) {
        var v = x[base + c] * r;
        if (a.has_w == 1u) { v = v * w[c]; }
        y[base + c] = v * a.s;
    }
}

//# kernel softcap_nll
// In place z ← cap·tanh(z/cap) over each row of logits, then per row (nll, max, ln Σ exp(z − max))
// with nll = −((z[target] − max) − ln Σ): torch's log_softmax in f32, its −log p of the target.
struct Args { rows: u32, vocab: u32, cap: f32 }
@group(0) @binding(0) var<storage, read> targets: array<u32>;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> a: Args;

var<workgroup> part: array<f32, 256>;
var<workgroup> at_target: f32;

@compute @workgroup_size(256)
fn softcap_nll(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= a.rows) { return; }
    let base = row * a.vocab;
    let y = targets[row];
    var m = -3.4028235e38;
    for (var c = li; c < a.vocab; c += 256u) {
        let v = a.cap * tanh(z[base + c] / a.cap);
        z[base + c] = v;
        m = max(m, v);
        if (c == y) { at_target = v; }
    }
    part[li] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (li < s) { part[li] = max(part[li], part[li + s]); }
        workgroupBarrier();
    }
    let mx = part[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var c = li; c < a.vocab; c += 256u) {
        sum += exp(z[base + c] - mx);
    }
    part[li] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (li < s) { part[li] = part[li] + part[li + s]; }
        workgroupBarrier();
    }
    if (li == 0u) {
        let ls = log(part[0]);
        out[row * 3u] = -((at_target - mx) - ls);
        out[row * 3u + 1u] = mx;
        out[row * 3u + 2u] = ls;
    }
}
