// The NCCL process group (c10d::ProcessGroupNCCL, in libtorch_cuda with the wheel's NCCL) and the
// CUDA device of a rank. Kept apart from c10d_shim.cpp because its header pulls in the CUDA and
// NCCL headers (the wheel's nvidia/cu13 and nvidia/nccl include folders; <nv/target>, which the
// wheel lacks, from host_only/nv). The collectives go through c10d_shim.cpp like any backend.
//
// The static_asserts pin the sizes this file allocates to the ones libtorch_cuda itself allocates
// (its own `new ProcessGroupNCCL` / `new Options` in `ProcessGroupNCCL::merge`, torch 2.11.0).

#define USE_C10D_NCCL 1

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <string>

static_assert(sizeof(c10d::ProcessGroupNCCL) == 0x458,
              "ProcessGroupNCCL's size differs from libtorch 2.11.0's: re-check the CUDA/NCCL headers");
static_assert(sizeof(c10d::ProcessGroupNCCL::Options) == 0xf8,
              "ProcessGroupNCCL::Options' size differs from libtorch 2.11.0's: re-check the CUDA/NCCL headers");

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using BackendPtr = c10::intrusive_ptr<c10d::Backend>;

namespace {

void report(char* err, size_t len, const std::string& what) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, what.c_str(), len - 1);
    err[len - 1] = '\0';
  }
}

template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    report(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    report(err, len, e.what());
  } catch (...) {
    report(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" {

// Makes `device` the current CUDA device of this process (each rank drives its LOCAL_RANK GPU).
int pgolf_dist_set_cuda_device(int device, char* err, size_t len) {
  return guarded(err, len, [&] { c10::cuda::set_device(static_cast<c10::DeviceIndex>(device)); });
}

// An NCCL group over `store`, bound to CUDA `device` and connected eagerly (a missing peer or a
// broken NCCL fails here, not at the first gradient). `timeout_ms` is c10d's collective timeout,
// enforced by ProcessGroupNCCL's watchdog, which aborts the communicator and ends the process
// (TORCH_NCCL_ASYNC_ERROR_HANDLING's default) when a collective outlives it.
void* pgolf_dist_nccl_new(void* store, int rank, int size, int device, int64_t timeout_ms, char* err, size_t len) {
  BackendPtr* out = nullptr;
  guarded(err, len, [&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(*static_cast<StorePtr*>(store), rank, size, opts);
    at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    pg->setBoundDeviceId(dev);
    pg->eagerConnectSingleDevice(dev);
    out = new BackendPtr(std::move(pg));
  });
  return out;
}

}  // extern "C"
