// The name of a CUDA device as the CUDA runtime reports it (cudaDeviceProp::name, e.g. "NVIDIA H100
// 80GB HBM3"), through libtorch's cached properties, so the index is libtorch's own (after
// CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER), the one `--device cuda:N` selects.
// Catches every C++ exception and reports failure as a nonzero return.

#include <c10/core/Device.h>
#include <cuda_runtime_api.h>

#include <cstdio>

// Declared as in ATen/cuda/CUDAContextLight.h (defined in libtorch_cuda), whose own include chain
// reaches cuSPARSE's fp16 headers and with them CCCL's <nv/target>, which the wheel does not ship.
namespace at::cuda {
cudaDeviceProp* getDeviceProperties(c10::DeviceIndex device);
}

extern "C" {

// Writes the NUL-terminated name of `device` into `out` (at most `len` bytes); 0 on success.
int pgolf_cuda_device_name(int device, char* out, size_t len) {
  try {
    if (out == nullptr || len == 0) {
      return -1;
    }
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(device));
    if (prop == nullptr) {
      return -1;
    }
    std::snprintf(out, len, "%s", prop->name);
    return 0;
  } catch (...) {
    return -1;
  }
}
}
