// libtorch's current CUDA stream for a device (at::cuda::getCurrentCUDAStream), on which our
// kernels launch: the stream a CUDA graph is capturing, or autograd's stream in backward.
// Catches every C++ exception and reports it through `err` (returns nonzero).

#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>

extern "C" int pgolf_kernels_current_stream(int device, void** stream, char* err, size_t len) {
  try {
    *stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    return 0;
  } catch (const std::exception& e) {
    if (err != nullptr && len > 0) {
      std::strncpy(err, e.what(), len - 1);
      err[len - 1] = '\0';
    }
  }
  return 1;
}
