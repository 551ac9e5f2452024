//! Custom autograd functions implemented in Rust: [`apply`] runs a [`FusedFunction`]'s forward as
//! one libtorch autograd node (`csrc/autograd_bridge.cpp`), whose backward calls the function's
//! hand-written backward. Works for CPU tensors too (a function may run tch ops), which is how
//! the bridge is tested without a GPU.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};
use tch::Tensor;
use torch_sys::C_tensor;

/// What a forward produces: the op's outputs, and the tensors its backward needs.
pub struct Forward {
    pub outputs: Vec<Tensor>,
    pub saved: Vec<Tensor>,
}

/// A fused op with its own backward. Implement on a unit struct and pass a `static` of it to
/// [`apply`]; per-call parameters go in `scalars` (kept in the node for backward). `name` must be
/// unique among ops (it identifies the op across the FFI).
pub trait FusedFunction: Sync {
    fn name(&self) -> &'static str;
    /// inputs: CUDA tensors as passed to `apply` (detached views; no autograd inside).
    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward>;
    /// One entry per input: its gradient, or None when it needs none. grad_outputs are
    /// materialised (zeros if unused).
    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>>;
}

/// Opaque C++ `std::vector<at::Tensor>`.
#[repr(C)]
struct TensorList {
    _private: [u8; 0],
}

/// Opaque C++ `std::string` (a callback's error message).
#[repr(C)]
struct ErrorSink {
    _private: [u8; 0],
}

type ForwardFn = unsafe extern "C" fn(
    op: *const c_void,
    inputs: *mut *mut C_tensor,
    n_inputs: usize,
    scalars: *const f64,
    n_scalars: usize,
    outputs: *mut TensorList,
    saved: *mut TensorList,
    err: *mut ErrorSink,
) -> i32;

type BackwardFn = unsafe extern "C" fn(
    op: *const c_void,
    saved: *mut *mut C_tensor,
    n_saved: usize,
    grad_outputs: *mut *mut C_tensor,
    n_grad_outputs: usize,
    scalars: *const f64,
    n_scalars: usize,
    grad_inputs: *mut TensorList,
    err: *mut ErrorSink,
) -> i32;

extern "C" {
    fn pgolf_kernels_apply(
        op: *const c_void,
        forward: ForwardFn,
        backward: BackwardFn,
        inputs: *const *mut C_tensor,
        n_inputs: usize,
        scalars: *const f64,
        n_scalars: usize,
        err: *mut c_char,
        len: usize,
    ) -> *mut TensorList;
    fn pgolf_kernels_grad(
        outputs: *const *mut C_tensor,
        grad_outputs: *const *mut C_tensor,
        n_outputs: usize,
        inputs: *const *mut C_tensor,
        n_inputs: usize,
        err: *mut c_char,
        len: usize,
    ) -> *mut TensorList;
    fn pgolf_kernels_list_push(list: *mut TensorList, t: *const C_tensor);
    fn pgolf_kernels_list_len(list: *const TensorList) -> usize;
    fn pgolf_kernels_list_get(list: *const TensorList, i: usize) -> *mut C_tensor;
    fn pgolf_kernels_list_free(list: *mut TensorList);
    fn pgolf_kernels_set_error(err: *mut ErrorSink, msg: *const c_char, len: usize);
}

/// The C++ node keeps a thin pointer to the op: a leaked `&'static dyn FusedFunction`, one per
/// op name (unit-struct statics are zero-sized, so their own addresses need not be distinct).
fn thin(f: &'static dyn FusedFunction) -> *const c_void {
    static OPS: OnceLock<Mutex<HashMap<&'static str, usize>>> = OnceLock::new();
    let mut ops = OPS.get_or_init(Default::default).lock().unwrap();
    *ops.entry(f.name())
        .or_insert_with(|| Box::into_raw(Box::new(f)) as usize) as *const c_void
}

/// # Safety
/// `op` must come from [`thin`].
unsafe fn op_of(op: *const c_void) -> &'static dyn FusedFunction {
    *(op as *const &'static dyn FusedFunction)
}

/// Takes ownership of `n` tensors the bridge allocated for us.
unsafe fn take(ptrs: *mut *mut C_tensor, n: usize) -> Vec<Tensor> {
    (0..n).map(|i| Tensor::from_ptr(*ptrs.add(i))).collect()
}

fn set_error(err: *mut ErrorSink, msg: &str) {
    // SAFETY: `err` is the bridge's std::string for this call; it copies the bytes.
    unsafe { pgolf_kernels_set_error(err, msg.as_ptr() as *const c_char, msg.len()) }
}

/// Runs `body`, turning an error or a panic into the bridge's error protocol (never unwinds
/// into C++).
fn guarded(op: &str, phase: &str, err: *mut ErrorSink, body: impl FnOnce() -> Result<()>) -> i32 {
    let message = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => format!("{op} {phase}: {e:#}"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            format!("{op} {phase}: panicked: {what}")
        }
    };
    set_error(err, &message);
    1
}

unsafe extern "C" fn forward_trampoline(
    op: *const c_void,
    inputs: *mut *mut C_tensor,
    n_inputs: usize,
    scalars: *const f64,
    n_scalars: usize,
    outputs: *mut TensorList,
    saved: *mut TensorList,
    err: *mut ErrorSink,
) -> i32 {
    let f = op_of(op);
    let inputs = take(inputs, n_inputs);
    let scalars = std::slice::from_raw_parts(scalars, n_scalars);
    guarded(f.name(), "forward", err, || {
        let fwd = f.forward(&inputs, scalars)?;
        for t in &fwd.outputs {
            pgolf_kernels_list_push(outputs, t.as_ptr());
        }
        for t in &fwd.saved {
            pgolf_kernels_list_push(saved, t.as_ptr());
        }
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn backward_trampoline(
    op: *const c_void,
    saved: *mut *mut C_tensor,
    n_saved: usize,
    grad_outputs: *mut *mut C_tensor,
    n_grad_outputs: usize,
    scalars: *const f64,
    n_scalars: usize,
    grad_inputs: *mut TensorList,
    err: *mut ErrorSink,
) -> i32 {
    let f = op_of(op);
    let saved = take(saved, n_saved);
    let grad_outputs = take(grad_outputs, n_grad_outputs);
    let scalars = std::slice::from_raw_parts(scalars, n_scalars);
    guarded(f.name(), "backward", err, || {
        for g in f.backward(&saved, &grad_outputs, scalars)? {
            let ptr = g.as_ref().map_or(std::ptr::null(), |g| g.as_ptr());
            pgolf_kernels_list_push(grad_inputs, ptr);
        }
        Ok(())
    })
}

/// Runs `f` as one autograd node: outputs carry a grad_fn whose backward calls `f.backward`
/// (no node when grad mode is off or no input requires a gradient). Errors of `f`'s forward come
/// back here; errors of its backward come back from the `backward` call that reached it.
pub fn apply(
    f: &'static dyn FusedFunction,
    inputs: &[&Tensor],
    scalars: &[f64],
) -> Result<Vec<Tensor>> {
    let ptrs: Vec<*mut C_tensor> = inputs.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
    let mut buf = vec![0 as c_char; 4096];
    // SAFETY: the bridge only reads the inputs (copying the at::Tensor handles) and reports C++
    // exceptions through `buf`; the returned list is ours to free.
    let list = unsafe {
        pgolf_kernels_apply(
            thin(f),
            forward_trampoline,
            backward_trampoline,
            ptrs.as_ptr(),
            ptrs.len(),
            scalars.as_ptr(),
            scalars.len(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    take_list(list, &buf)
}

/// `torch.autograd.grad(outputs, inputs, grad_outputs)`: the gradients of `inputs` (undefined
/// tensors for inputs the outputs do not depend on), not accumulated into `.grad`; frees the
/// graph. For backward passes seeded with a given gradient (tch's `backward` takes none).
pub fn grad(
    outputs: &[&Tensor],
    grad_outputs: &[&Tensor],
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    if outputs.len() != grad_outputs.len() {
        bail!(
            "grad: {} outputs but {} output gradients",
            outputs.len(),
            grad_outputs.len()
        );
    }
    let ptrs = |ts: &[&Tensor]| -> Vec<*mut C_tensor> {
        ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
    };
    let (o, g, i) = (ptrs(outputs), ptrs(grad_outputs), ptrs(inputs));
    let mut buf = vec![0 as c_char; 4096];
    // SAFETY: the bridge only reads the tensors and reports C++ exceptions through `buf`.
    let list = unsafe {
        pgolf_kernels_grad(
            o.as_ptr(),
            g.as_ptr(),
            o.len(),
            i.as_ptr(),
            i.len(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    take_list(list, &buf)
}

/// The tensors of a list the bridge returned (null: the error message in `buf`), list freed.
fn take_list(list: *mut TensorList, buf: &[c_char]) -> Result<Vec<Tensor>> {
    if list.is_null() {
        // SAFETY: the bridge wrote a NUL-terminated message.
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        bail!("{}", msg.trim_end());
    }
    // SAFETY: a live list from the bridge; each element is a fresh at::Tensor copy we own.
    unsafe {
        let tensors = (0..pgolf_kernels_list_len(list))
            .map(|i| Tensor::from_ptr(pgolf_kernels_list_get(list, i)))
            .collect();
        pgolf_kernels_list_free(list);
        Ok(tensors)
    }
}

#[cfg(test)]
mod tests {
    //! The bridge on the CPU, with ops written in tch ops: gradients, unused outputs, inputs
    //! without gradient, scalars kept for backward, errors and panics on either side.

    use super::*;
    use tch::{Device, Kind};

    /// `(x·s + y, x·y)`; backward from the formulas. `y`'s gradient is withheld when scalar 1 is
    /// 1 (to test `None`); scalar 2 selects a failure: 1 forward error, 2 backward error,
    /// 3 backward panic, 4 wrong number of gradients.
    struct ScaleMul;

    impl FusedFunction for ScaleMul {
        fn name(&self) -> &'static str {
            "test_scale_mul"
        }
        fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
            let [x, y] = inputs else { bail!("two inputs") };
            assert!(
                !x.requires_grad() && !y.requires_grad(),
                "inputs must come detached"
            );
            if scalars[2] == 1.0 {
                bail!("forward refused");
            }
            Ok(Forward {
                outputs: vec![x * scalars[0] + y, x * y],
                saved: vec![x.shallow_clone(), y.shallow_clone()],
            })
        }
        fn backward(
            &self,
            saved: &[Tensor],
            grads: &[Tensor],
            scalars: &[f64],
        ) -> Result<Vec<Option<Tensor>>> {
            let ([x, y], [g0, g1]) = (saved, grads) else {
                bail!("shapes")
            };
            match scalars[2] {
                2.0 => bail!("backward refused"),
                3.0 => panic!("backward panicked on purpose"),
                4.0 => return Ok(vec![None]),
                _ => {}
            }
            let dx = g0 * scalars[0] + g1 * y;
            let dy = (scalars[1] != 1.0).then(|| g0 + g1 * x);
            Ok(vec![Some(dx), dy])
        }
    }

    static SCALE_MUL: ScaleMul = ScaleMul;

    fn leaves() -> (Tensor, Tensor) {
        let opts = (Kind::Double, Device::Cpu);
        (
            Tensor::randn([3, 4], opts).set_requires_grad(true),
            Tensor::randn([3, 4], opts).set_requires_grad(true),
        )
    }

    #[test]
    fn gradients_match_autograd_of_the_same_math() {
        let (x, y) = leaves();
        let out = apply(&SCALE_MUL, &[&x, &y], &[2.5, 0.0, 0.0]).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].requires_grad() && out[1].requires_grad());
        let loss = (&out[0] * &out[0]).sum(Kind::Double) + out[1].sum(Kind::Double) * 3.0;
        let got = Tensor::run_backward(&[&loss], &[&x, &y], false, false);
        let (xr, yr) = (
            x.detach().set_requires_grad(true),
            y.detach().set_requires_grad(true),
        );
        let (o0, o1) = (&xr * 2.5 + &yr, &xr * &yr);
        let loss_r = (&o0 * &o0).sum(Kind::Double) + o1.sum(Kind::Double) * 3.0;
        let want = Tensor::run_backward(&[&loss_r], &[&xr, &yr], false, false);
        for (g, w) in got.iter().zip(&want) {
            assert!(g.allclose(w, 1e-12, 1e-12, false), "{g} vs {w}");
        }
    }

    #[test]
    fn unused_output_gets_a_zero_gradient_and_none_means_no_gradient() {
        let (x, y) = leaves();
        let out = apply(&SCALE_MUL, &[&x, &y], &[2.0, 1.0, 0.0]).unwrap();
        out[0].sum(Kind::Double).backward(); // out[1] unused: its gradient arrives as zeros
        assert!(x
            .grad()
            .allclose(&x.ones_like().g_mul_scalar(2.0), 0.0, 0.0, false));
        assert!(!y.grad().defined(), "y's gradient was withheld");
    }

    #[test]
    fn grad_seeds_the_backward_with_given_gradients() {
        let (x, y) = leaves();
        let out = apply(&SCALE_MUL, &[&x, &y], &[1.5, 0.0, 0.0]).unwrap();
        let (g0, g1) = (x.randn_like(), x.randn_like());
        let got = grad(&[&out[0], &out[1]], &[&g0, &g1], &[&x, &y]).unwrap();
        let want_dx = &g0 * 1.5 + &g1 * y.detach();
        let want_dy = &g0 + &g1 * x.detach();
        assert!(got[0].allclose(&want_dx, 1e-12, 1e-12, false));
        assert!(got[1].allclose(&want_dy, 1e-12, 1e-12, false));
        assert!(!x.grad().defined(), "grad must not accumulate into .grad");
    }

    #[test]
    fn no_node_without_grad_mode_or_without_inputs_needing_grad() {
        let (x, y) = leaves();
        let out = tch::no_grad(|| apply(&SCALE_MUL, &[&x, &y], &[1.0, 0.0, 0.0]).unwrap());
        assert!(!out[0].requires_grad());
        let (a, b) = (x.detach(), y.detach());
        let out = apply(&SCALE_MUL, &[&a, &b], &[1.0, 0.0, 0.0]).unwrap();
        assert!(!out[0].requires_grad());
        assert!(out[0].allclose(&(&a + &b), 0.0, 0.0, false));
    }

    #[test]
    fn forward_error_comes_back_from_apply() {
        let (x, y) = leaves();
        let err = apply(&SCALE_MUL, &[&x, &y], &[1.0, 0.0, 1.0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test_scale_mul forward: forward refused"),
            "{err}"
        );
    }

    #[test]
    fn backward_errors_and_panics_come_back_from_backward() {
        for (mode, needle) in [
            (2.0, "test_scale_mul backward: backward refused"),
            (
                3.0,
                "test_scale_mul backward: panicked: backward panicked on purpose",
            ),
            (4.0, "returned 1 gradients for 2 inputs"),
        ] {
            let (x, y) = leaves();
            let out = apply(&SCALE_MUL, &[&x, &y], &[1.0, 0.0, mode]).unwrap();
            let err = out[0]
                .sum(Kind::Double)
                .f_backward()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "mode {mode}: {err}");
        }
    }

    #[test]
    fn chained_nodes_and_other_threads() {
        let (x, y) = leaves();
        let (x2, y2) = (x.shallow_clone(), y.shallow_clone());
        std::thread::spawn(move || {
            let a = apply(&SCALE_MUL, &[&x2, &y2], &[2.0, 0.0, 0.0]).unwrap();
            let b = apply(&SCALE_MUL, &[&a[0], &y2], &[3.0, 0.0, 0.0]).unwrap();
            b[0].sum(Kind::Double).backward(); // b0 = 3(2x + y) + y
        })
        .join()
        .unwrap();
        assert!(x
            .grad()
            .allclose(&x.ones_like().g_mul_scalar(6.0), 0.0, 0.0, false));
        // y gets 3·1 + 1 from b0 and zero from the unused outputs.
        assert!(y
            .grad()
            .allclose(&y.ones_like().g_mul_scalar(4.0), 0.0, 0.0, false));
    }
}
