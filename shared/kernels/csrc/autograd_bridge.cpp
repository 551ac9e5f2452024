// A libtorch autograd function whose forward and backward are implemented in Rust
// (src/autograd.rs): `pgolf_kernels_apply` runs the Rust forward as one torch::autograd::Function,
// whose node calls the Rust backward when autograd reaches it (possibly on autograd's device
// thread). Rust passes the op (an opaque pointer) and its two callbacks; this file never looks
// inside the op.
//
// Ownership across the FFI: tensors handed to Rust are fresh `new at::Tensor` copies that Rust
// owns and frees (tch's `Tensor::from_ptr`); tensors Rust hands back are copied into a TensorList
// (`pgolf_kernels_list_push`) and stay owned by Rust. A Rust error comes back as a message, and
// becomes a C++ exception here, so it reaches the caller of `apply` (forward) or of
// `backward` (through autograd's engine) as an error, never an abort.

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using TensorList = std::vector<at::Tensor>;

// Rust callbacks: return 0 on success; otherwise they have set the message through
// `pgolf_kernels_set_error(err, ...)`. Tensor arrays are owned by the callee.
using ForwardFn = int (*)(const void* op, at::Tensor** inputs, size_t n_inputs, const double* scalars,
                          size_t n_scalars, TensorList* outputs, TensorList* saved, std::string* err);
using BackwardFn = int (*)(const void* op, at::Tensor** saved, size_t n_saved, at::Tensor** grad_outputs,
                           size_t n_grad_outputs, const double* scalars, size_t n_scalars,
                           TensorList* grad_inputs, std::string* err);

struct Callbacks {
  const void* op;
  ForwardFn forward;
  BackwardFn backward;
};

// Fresh heap copies for Rust to own (undefined tensors stay undefined copies).
std::vector<at::Tensor*> hand_over(const std::vector<at::Tensor>& tensors, bool detach) {
  std::vector<at::Tensor*> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(new at::Tensor(detach && t.defined() ? t.detach() : t));
  return out;
}

struct RustFunction : public torch::autograd::Function<RustFunction> {
  // Arguments 0 and 1 (callbacks, scalars) are not tensors; autograd expects an (undefined)
  // gradient for each of them too.
  static constexpr size_t kNonTensorArgs = 2;

  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const Callbacks& cb, const std::vector<double>& scalars,
                                                at::TensorList inputs) {
    auto owned = hand_over(inputs.vec(), /*detach=*/true);
    TensorList outputs, saved;
    std::string err;
    if (cb.forward(cb.op, owned.data(), owned.size(), scalars.data(), scalars.size(), &outputs, &saved,
                   &err) != 0)
      throw std::runtime_error(err);
    ctx->saved_data["op"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(cb.op));
    ctx->saved_data["backward"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(cb.backward));
    ctx->saved_data["scalars"] = c10::IValue(scalars);
    ctx->saved_data["inputs"] = static_cast<int64_t>(inputs.size());
    ctx->save_for_backward(saved);
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto op = reinterpret_cast<const void*>(static_cast<intptr_t>(ctx->saved_data["op"].toInt()));
    auto backward = reinterpret_cast<BackwardFn>(static_cast<intptr_t>(ctx->saved_data["backward"].toInt()));
    auto scalars = ctx->saved_data["scalars"].toDoubleVector();
    auto n_inputs = static_cast<size_t>(ctx->saved_data["inputs"].toInt());
    auto saved = hand_over(ctx->get_saved_variables(), /*detach=*/true);
    auto grads = hand_over(grad_outputs, /*detach=*/true);
    TensorList grad_inputs;
    std::string err;
    if (backward(op, saved.data(), saved.size(), grads.data(), grads.size(), scalars.data(), scalars.size(),
                 &grad_inputs, &err) != 0)
      throw std::runtime_error(err);
    if (grad_inputs.size() != n_inputs)
      throw std::runtime_error("fused backward returned " + std::to_string(grad_inputs.size()) +
                               " gradients for " + std::to_string(n_inputs) + " inputs");
    torch::autograd::variable_list out(kNonTensorArgs);
    out.insert(out.end(), grad_inputs.begin(), grad_inputs.end());
    return out;
  }
};

void report(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, what, len - 1);
    err[len - 1] = '\0';
  }
}

// Runs `body` (which returns a new TensorList) for an entry point called from Rust: any C++
// exception becomes null, with its message (without libtorch's backtrace) in `err`.
template <class F>
TensorList* catching(char* err, size_t len, F body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    report(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    report(err, len, e.what());
  } catch (...) {
    report(err, len, "unknown C++ exception");
  }
  return nullptr;
}

}  // namespace

extern "C" {

// Runs the op's Rust forward as one autograd node (none when grad mode is off or no input needs a
// gradient). On success returns a TensorList of the outputs (free with pgolf_kernels_list_free);
// on failure null, with the message in `err`.
TensorList* pgolf_kernels_apply(const void* op, ForwardFn forward, BackwardFn backward, at::Tensor* const* inputs,
                                size_t n_inputs, const double* scalars, size_t n_scalars, char* err, size_t len) {
  return catching(err, len, [&] {
    TensorList in;
    in.reserve(n_inputs);
    for (size_t i = 0; i < n_inputs; ++i) in.push_back(*inputs[i]);
    std::vector<double> s(scalars, scalars + n_scalars);
    Callbacks cb{op, forward, backward};
    auto outputs = RustFunction::apply(cb, s, at::TensorList(in));
    return new TensorList(std::move(outputs));
  });
}

// torch::autograd::grad: the gradients of `inputs` given those of `outputs` (not accumulated
// into .grad; the graph is freed). Returns a TensorList, or null with the message in `err`.
TensorList* pgolf_kernels_grad(at::Tensor* const* outputs, at::Tensor* const* grad_outputs, size_t n_outputs,
                               at::Tensor* const* inputs, size_t n_inputs, char* err, size_t len) {
  return catching(err, len, [&] {
    TensorList outs, grads, ins;
    for (size_t i = 0; i < n_outputs; ++i) {
      outs.push_back(*outputs[i]);
      grads.push_back(*grad_outputs[i]);
    }
    for (size_t i = 0; i < n_inputs; ++i) ins.push_back(*inputs[i]);
    return new TensorList(torch::autograd::grad(outs, ins, grads, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true));
  });
}

// `t` null: an undefined tensor (a gradient that is not needed).
void pgolf_kernels_list_push(TensorList* list, const at::Tensor* t) {
  list->push_back(t != nullptr ? *t : at::Tensor());
}

size_t pgolf_kernels_list_len(const TensorList* list) { return list->size(); }

// A fresh copy of element i for Rust to own.
at::Tensor* pgolf_kernels_list_get(const TensorList* list, size_t i) { return new at::Tensor((*list)[i]); }

void pgolf_kernels_list_free(TensorList* list) { delete list; }

void pgolf_kernels_set_error(std::string* err, const char* msg, size_t len) { err->assign(msg, len); }

}  // extern "C"
