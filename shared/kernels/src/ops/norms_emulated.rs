//! The row ops' CUDA sources (`cuda/qkv_norm_rope.cu`, `cuda/mix_norm.cu`, `cuda/xsa.cu`,
//! `cuda/smear_gate.cu`) run on the CPU, so their indexing, masking, shuffle pairing, strided
//! inputs and gradients and partial sums are tested here without a GPU: the kernels are compiled as C++ with `tests/emulator/cuda_on_cpu.h` (one OS
//! thread per CUDA thread, shuffles through per-warp barriers), launched with the ops' own launch
//! geometry, and compared with the tch references under autograd. Skipped (with a message) when
//! no C++20 compiler is found (`CXX`, g++, c++, clang++).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use super::qkv_norm_rope::{self, Heads};
use super::{mix_norm, rms_norm, smear_gate, xsa};

const EPS: f64 = rms_norm::DEFAULT_EPS;

/// The emulator binary, built once per test process; None when no compiler is available.
fn emulator() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let candidates = std::env::var("CXX")
            .into_iter()
            .chain(["g++", "c++", "clang++"].map(String::from));
        let cxx = candidates.into_iter().find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        let dir = scratch("build");
        let exe = dir.join("norm_kernels");
        let out = Command::new(&cxx)
            .args(["-std=c++20", "-O1", "-pthread", "-I"])
            .arg(root.join("cuda"))
            .arg("-I")
            .arg(root.join("tests/emulator"))
            .arg(root.join("tests/emulator/norm_kernels.cpp"))
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("running the C++ compiler");
        assert!(
            out.status.success(),
            "{cxx} could not build the kernel emulator:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(exe)
    })
    .as_deref()
}

/// A directory for one case (or the build) under `target/<profile>/pgolf-kernels-emulated/<pid>/`;
/// the directories of test processes that are gone are removed on first use.
fn scratch(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap(); // target/<profile>/deps/<test binary>
        let parent = exe
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("pgolf-kernels-emulated");
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
        parent.join(std::process::id().to_string())
    });
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the emulator; a kernel whose lanes disagree on their shuffles deadlocks it, hence the
/// time limit.
fn run(args: &[String]) {
    let exe = emulator().unwrap();
    let mut child = Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed().as_secs() > 120 {
            child.kill().ok();
            panic!("emulator {args:?}: no result after 120 s (lanes of a warp out of step?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
    assert!(status.success(), "emulator {args:?}: {status}: {stderr}");
}

/// Writes a bf16 tensor's memory (contiguous) as 16-bit words.
fn write_bf16(dir: &Path, name: &str, t: &Tensor) {
    assert_eq!(t.kind(), Kind::BFloat16);
    let bits = Vec::<i16>::try_from(t.contiguous().view_dtype(Kind::Int16).flatten(0, -1)).unwrap();
    std::fs::write(
        dir.join(name),
        bits.iter()
            .flat_map(|b| b.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn write_f32(dir: &Path, name: &str, t: &Tensor) {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().flatten(0, -1)).unwrap();
    std::fs::write(
        dir.join(name),
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn read_bf16(dir: &Path, name: &str, shape: &[i64]) -> Tensor {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let bits: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Tensor::from_slice(&bits)
        .view_dtype(Kind::BFloat16)
        .reshape(shape)
}

fn read_f32(dir: &Path, name: &str, shape: &[i64]) -> Tensor {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// Every element within `atol_frac·max|want| + rtol·|want|` (checked in f64).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol_frac: f64, rtol: f64) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let (g, w) = (got.to_kind(Kind::Double), want.to_kind(Kind::Double));
    let diff = (&g - &w).abs();
    let scale = w.abs().max().double_value(&[]);
    let bad = diff
        .gt_tensor(&(w.abs() * rtol + atol_frac * scale))
        .sum(Kind::Int64)
        .int64_value(&[]);
    let max = diff.max().double_value(&[]);
    assert!(
        bad == 0,
        "{what}: {bad} elements out of tolerance, max |Δ| {max:e} (max |ref| {scale:e})"
    );
    assert!(
        scale > 0.0,
        "{what}: the reference is all zeros (a test that cannot fail)"
    );
}

/// One qkv_norm_rope case: B, T, H, Hkv, hd, rotated dims rd, backward blocks, output gradients
/// in SDPA's layout (strided) or contiguous.
#[allow(clippy::too_many_arguments)]
fn qkv_case(
    b: i64,
    t: i64,
    h: i64,
    hkv: i64,
    hd: i64,
    rd: i64,
    backward_blocks: i64,
    strided: bool,
) {
    if emulator().is_none() {
        eprintln!("skipped: no C++20 compiler for the kernel emulator");
        return;
    }
    tch::manual_seed(b * 1000 + t * 100 + hd);
    let dir = scratch(&format!(
        "qkv-{b}-{t}-{h}-{hkv}-{hd}-{rd}-{backward_blocks}-{strided}"
    ));
    let w = (h + 2 * hkv) * hd;
    let qkv = Tensor::randn([b, t, w], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let inv_freq = (Tensor::arange_start_step(0, rd, 2, (Kind::Double, Device::Cpu)) / rd as f64
        * -(10_000f64.ln()))
    .exp();
    let freqs = Tensor::arange(t, (Kind::Double, Device::Cpu)).outer(&inv_freq);
    let (cos, sin) = (
        freqs.cos().to_kind(Kind::Float),
        freqs.sin().to_kind(Kind::Float),
    );
    let gain = Tensor::randn([h], (Kind::Float, Device::Cpu)) * 0.3 + 1.5;
    // Gradients: the storage (written as is) and the [B, T, n, hd] view of it the op receives.
    let grad = |n: i64| {
        if strided {
            let storage =
                Tensor::randn([b, n, t, hd], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
            let view = storage.transpose(1, 2);
            (storage, view)
        } else {
            let storage =
                Tensor::randn([b, t, n, hd], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
            (storage.shallow_clone(), storage)
        }
    };
    let grads = [grad(h), grad(hkv), grad(hkv)];
    write_bf16(&dir, "qkv", &qkv);
    write_f32(&dir, "cos", &cos);
    write_f32(&dir, "sin", &sin);
    write_f32(&dir, "q_gain", &gain);
    for (name, (storage, _)) in ["dq", "dk", "dv"].iter().zip(&grads) {
        write_bf16(&dir, name, storage);
    }
    let heads = Heads::of(&qkv, &cos, &sin, &gain, hd).unwrap();
    let (rows_per_block, _) = qkv_norm_rope::block_shape(&heads).unwrap();
    let mut args: Vec<String> = vec!["qkv".into(), dir.display().to_string()];
    args.extend([b, t, h, hkv, hd, rd, rows_per_block, backward_blocks].map(|v| v.to_string()));
    for (_, view) in &grads {
        args.extend(view.stride()[..3].iter().map(|s| s.to_string()));
    }
    args.push(format!("{:e}", EPS as f32));
    run(&args);

    let x = qkv.to_kind(Kind::Double).set_requires_grad(true);
    let g = gain.to_kind(Kind::Double).set_requires_grad(true);
    let (q, k, v) = qkv_norm_rope::reference(&x, &cos, &sin, &g, hd, EPS).unwrap();
    let loss = [&q, &k, &v]
        .iter()
        .zip(&grads)
        .map(|(o, (_, d))| (*o * d.to_kind(Kind::Double)).sum(Kind::Double))
        .fold(Tensor::zeros([], (Kind::Double, Device::Cpu)), |a, l| a + l);
    let want = Tensor::run_backward(&[loss], &[&x, &g], false, false);
    let case = format!(
        "qkv B={b} T={t} H={h} Hkv={hkv} hd={hd} rd={rd} blocks={backward_blocks} strided={strided}"
    );
    let bf = 1.0 / 128.0;
    assert_close(
        &format!("{case}: q"),
        &read_bf16(&dir, "q", &[b, t, h, hd]),
        &q,
        1e-3,
        bf,
    );
    assert_close(
        &format!("{case}: k"),
        &read_bf16(&dir, "k", &[b, t, hkv, hd]),
        &k,
        1e-3,
        bf,
    );
    assert_close(
        &format!("{case}: v"),
        &read_bf16(&dir, "v", &[b, t, hkv, hd]),
        &v,
        0.0,
        0.0,
    );
    assert_close(
        &format!("{case}: d qkv"),
        &read_bf16(&dir, "dqkv", &[b, t, w]),
        &want[0],
        2e-3,
        2.0 * bf,
    );
    let partial = read_f32(&dir, "dq_gain_partial", &[backward_blocks, h]);
    assert_close(
        &format!("{case}: d q_gain"),
        &partial.sum_dim_intlist(0, false, Kind::Float),
        &want[1],
        1e-5,
        1e-5,
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// One mix_norm + rms_norm case: N rows of d, backward blocks, the norms' output factor.
fn mix_case(n: i64, d: i64, backward_blocks: i64, scale: f64) {
    if emulator().is_none() {
        eprintln!("skipped: no C++20 compiler for the kernel emulator");
        return;
    }
    tch::manual_seed(n * 7 + d);
    let dir = scratch(&format!("mix-{n}-{d}-{backward_blocks}-{scale}"));
    let f = (Kind::Float, Device::Cpu);
    let bf16 = |t: Tensor| t.to_kind(Kind::BFloat16);
    let (x, x0) = (
        bf16(Tensor::randn([n, d], f)),
        bf16(Tensor::randn([n, d], f)),
    );
    let mix = Tensor::stack(
        &[
            Tensor::randn([d], f) * 0.2 + 1.0,
            Tensor::randn([d], f) * 0.2,
        ],
        0,
    );
    let (dxm, dn) = (
        bf16(Tensor::randn([n, d], f)),
        bf16(Tensor::randn([n, d], f)),
    );
    for (name, t) in [("x", &x), ("x0", &x0), ("dxm", &dxm), ("dn", &dn)] {
        write_bf16(&dir, name, t);
    }
    write_f32(&dir, "mix", &mix);
    let k = [1, 2, 4][mix_norm::variant(d, "test").unwrap()];
    let mut args: Vec<String> = vec!["mix".into(), dir.display().to_string()];
    args.extend([n, d, k, backward_blocks].map(|v| v.to_string()));
    args.push(format!("{:e}", EPS as f32));
    // The factor as the op passes it (f32), written exactly.
    args.push(format!("{:e}", scale as f32));
    run(&args);

    // mix_norm's reference on bf16 inputs: f32 math, xm rounded to bf16 as the kernel does.
    let (xl, x0l, ml) = (
        x.set_requires_grad(true),
        x0.set_requires_grad(true),
        mix.set_requires_grad(true),
    );
    let (xm, nn) = mix_norm::reference(&xl, &x0l, &ml, EPS, scale).unwrap();
    let loss = (xm.to_kind(Kind::Float) * dxm.to_kind(Kind::Float)).sum(Kind::Float)
        + (nn.to_kind(Kind::Float) * dn.to_kind(Kind::Float)).sum(Kind::Float);
    let want = Tensor::run_backward(&[loss], &[&xl, &x0l, &ml], false, false);
    // rms_norm's reference in f64.
    let xd = x.to_kind(Kind::Double).set_requires_grad(true);
    let y = rms_norm::reference(&xd, EPS, scale);
    let dy_dx = Tensor::run_backward(
        &[(&y * dn.to_kind(Kind::Double)).sum(Kind::Double)],
        &[&xd],
        false,
        false,
    );

    let case =
        format!("mix_norm/rms_norm N={n} d={d} K={k} blocks={backward_blocks} scale={scale}");
    let bf = 1.0 / 128.0;
    let shape = [n, d];
    assert_close(
        &format!("{case}: xm"),
        &read_bf16(&dir, "xm", &shape),
        &xm,
        0.0,
        bf / 2.0,
    );
    assert_close(
        &format!("{case}: n"),
        &read_bf16(&dir, "n", &shape),
        &nn,
        1e-3,
        bf,
    );
    assert_close(
        &format!("{case}: dx"),
        &read_bf16(&dir, "dx", &shape),
        &want[0],
        2e-3,
        2.0 * bf,
    );
    assert_close(
        &format!("{case}: dx0"),
        &read_bf16(&dir, "dx0", &shape),
        &want[1],
        2e-3,
        2.0 * bf,
    );
    let partial = read_f32(&dir, "dmix_partial", &[backward_blocks, 2, d]);
    assert_close(
        &format!("{case}: d mix"),
        &partial.sum_dim_intlist(0, false, Kind::Float),
        &want[2],
        1e-5,
        1e-4,
    );
    assert_close(
        &format!("{case}: rms_norm y"),
        &read_bf16(&dir, "rms_y", &shape),
        &y,
        1e-3,
        bf,
    );
    assert_close(
        &format!("{case}: rms_norm dx"),
        &read_bf16(&dir, "rms_dx", &shape),
        &dy_dx[0],
        2e-3,
        2.0 * bf,
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn qkv_norm_rope_kernels_at_the_baseline_head_layout() {
    qkv_case(1, 6, 8, 4, 64, 64, 2, true); // SDPA-layout gradients, 3 rows per backward block
    qkv_case(1, 6, 8, 4, 64, 64, 1, false); // contiguous gradients, one block loops over all rows
}

#[test]
fn qkv_norm_rope_kernels_at_other_head_sizes_with_masked_rows() {
    qkv_case(2, 9, 3, 1, 16, 16, 2, true); // 16 rows per block: the last block half empty
    qkv_case(1, 5, 2, 1, 128, 128, 3, true);
}

/// Partial RoPE: R0322's 16 of 64 (halves of one lane), 32 of 64 (two lanes), 48 of 64 (three
/// lanes: partners not a butterfly), 16 of 16 at masked rows, 32 of 128.
#[test]
fn qkv_norm_rope_kernels_with_partial_rope() {
    qkv_case(1, 6, 8, 4, 64, 16, 2, true);
    qkv_case(1, 5, 8, 4, 64, 32, 1, false);
    qkv_case(1, 5, 8, 4, 64, 48, 2, true);
    qkv_case(1, 5, 2, 1, 128, 32, 3, true);
}

#[test]
fn norm_kernels_for_each_chunk_count() {
    mix_case(10, 512, 2, 1.0); // K = 2, the baseline's d
    mix_case(9, 256, 3, 1.0); // K = 1; a block with fewer rows than warps
    mix_case(7, 320, 1, 1.0); // K = 2 with a partial second chunk
    mix_case(5, 1024, 2, 1.0); // K = 4
}

/// R0322's LN scale folded into the norms: block 3's 1/2 and block 10's 1/√11.
#[test]
fn norm_kernels_with_an_output_factor() {
    mix_case(10, 512, 2, 0.5);
    mix_case(7, 320, 3, 1.0 / 11f64.sqrt());
}

/// One xsa case: B, T, H, Hkv, hd, blocks (both kernels), `y` in SDPA's layout (strided, and so
/// `dy`) or contiguous, `d out` strided or contiguous.
#[allow(clippy::too_many_arguments)]
fn xsa_case(
    b: i64,
    t: i64,
    h: i64,
    hkv: i64,
    hd: i64,
    blocks: i64,
    strided_y: bool,
    strided_g: bool,
) {
    if emulator().is_none() {
        eprintln!("skipped: no C++20 compiler for the kernel emulator");
        return;
    }
    tch::manual_seed(b * 1000 + t * 100 + h * 10 + hd);
    let dir = scratch(&format!(
        "xsa-{b}-{t}-{h}-{hkv}-{hd}-{blocks}-{strided_y}-{strided_g}"
    ));
    let f = (Kind::Float, Device::Cpu);
    // The storage (written as is) and the [B, T, n, hd] view of it the op receives.
    let bthd = |n: i64, strided: bool| {
        if strided {
            let storage = Tensor::randn([b, n, t, hd], f).to_kind(Kind::BFloat16);
            let view = storage.transpose(1, 2);
            (storage, view)
        } else {
            let storage = Tensor::randn([b, t, n, hd], f).to_kind(Kind::BFloat16);
            (storage.shallow_clone(), storage)
        }
    };
    let (y_store, y) = bthd(h, strided_y);
    let (g_store, g) = bthd(h, strided_g);
    let v = Tensor::randn([b, t, hkv, hd], f).to_kind(Kind::BFloat16);
    write_bf16(&dir, "y", &y_store);
    write_bf16(&dir, "g", &g_store);
    write_bf16(&dir, "v", &v);
    let (rows_per_block, _) = xsa::block_shape(hkv, hd).unwrap();
    let mut args: Vec<String> = vec!["xsa".into(), dir.display().to_string()];
    args.extend([b, t, h, hkv, hd, rows_per_block, blocks].map(|v| v.to_string()));
    for view in [&y, &g] {
        args.extend(view.stride()[..3].iter().map(|s| s.to_string()));
    }
    run(&args);

    let yd = y.to_kind(Kind::Double).set_requires_grad(true);
    let vd = v.to_kind(Kind::Double).set_requires_grad(true);
    let out = xsa::reference(&yd, &vd).unwrap();
    let want = Tensor::run_backward(
        &[(&out * g.to_kind(Kind::Double)).sum(Kind::Double)],
        &[&yd, &vd],
        false,
        false,
    );
    let case = format!(
        "xsa B={b} T={t} H={h} Hkv={hkv} hd={hd} blocks={blocks} strided y={strided_y} g={strided_g}"
    );
    let bf = 1.0 / 128.0;
    assert_close(
        &format!("{case}: out"),
        &read_bf16(&dir, "out", &[b, t, h, hd]),
        &out,
        1e-3,
        bf,
    );
    // dy in y's layout: the storage read back and seen through the same view.
    let dy = match strided_y {
        true => read_bf16(&dir, "dy", &[b, h, t, hd]).transpose(1, 2),
        false => read_bf16(&dir, "dy", &[b, t, h, hd]),
    };
    assert_close(&format!("{case}: dy"), &dy, &want[0], 2e-3, 2.0 * bf);
    assert_close(
        &format!("{case}: dv"),
        &read_bf16(&dir, "dv", &[b, t, hkv, hd]),
        &want[1],
        2e-3,
        2.0 * bf,
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// One smear_gate case: B, T, d, forward and backward blocks.
fn smear_case(b: i64, t: i64, d: i64, forward_blocks: i64, backward_blocks: i64) {
    if emulator().is_none() {
        eprintln!("skipped: no C++20 compiler for the kernel emulator");
        return;
    }
    tch::manual_seed(b * 1000 + t * 100 + d);
    let dir = scratch(&format!(
        "smear-{b}-{t}-{d}-{forward_blocks}-{backward_blocks}"
    ));
    let f = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([b, t, d], f).to_kind(Kind::BFloat16);
    let g = Tensor::randn([b, t, d], f).to_kind(Kind::BFloat16);
    let gate = Tensor::randn([d], f) * 2.0;
    write_bf16(&dir, "x", &x);
    write_bf16(&dir, "g", &g);
    write_f32(&dir, "gate", &gate);
    let (rows_per_block, _) = smear_gate::block_shape(d).unwrap();
    let mut args: Vec<String> = vec!["smear".into(), dir.display().to_string()];
    args.extend([b, t, d, rows_per_block, forward_blocks, backward_blocks].map(|v| v.to_string()));
    run(&args);

    let xd = x.to_kind(Kind::Double).set_requires_grad(true);
    let gd = gate.to_kind(Kind::Double).set_requires_grad(true);
    let out = smear_gate::reference(&xd, &gd).unwrap();
    let want = Tensor::run_backward(
        &[(&out * g.to_kind(Kind::Double)).sum(Kind::Double)],
        &[&xd, &gd],
        false,
        false,
    );
    let case = format!("smear_gate B={b} T={t} d={d} blocks={forward_blocks}/{backward_blocks}");
    let bf = 1.0 / 128.0;
    assert_close(
        &format!("{case}: out"),
        &read_bf16(&dir, "out", &[b, t, d]),
        &out,
        1e-3,
        bf,
    );
    assert_close(
        &format!("{case}: dx"),
        &read_bf16(&dir, "dx", &[b, t, d]),
        &want[0],
        1e-3,
        bf,
    );
    let partial = read_f32(&dir, "dgate_partial", &[backward_blocks, d]);
    assert_close(
        &format!("{case}: d gate"),
        &partial.sum_dim_intlist(0, false, Kind::Float),
        &want[1],
        1e-5,
        1e-4,
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn xsa_kernels_at_r0322s_head_layout() {
    xsa_case(1, 6, 8, 4, 64, 1, true, false); // SDPA's y, the GEMM's contiguous d out; 8 rows a block
    xsa_case(2, 5, 8, 4, 64, 1, false, true); // rows past N masked, one block strides over rows
}

#[test]
fn xsa_kernels_at_other_head_layouts() {
    xsa_case(1, 5, 3, 3, 32, 2, true, true); // MHA; 3·32/8 = 12 threads a row, 8 rows a block
    xsa_case(1, 3, 2, 1, 128, 2, true, false);
}

#[test]
fn smear_gate_kernels_across_sequence_boundaries() {
    smear_case(2, 5, 512, 1, 2); // R0322's d: 4 rows a block; one block strides over rows
    smear_case(3, 4, 48, 2, 1); // 32 rows a block, the last ones masked
}
