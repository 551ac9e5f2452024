// What libtorch's C++ API offers and tch does not expose: the device caching allocator's peak
// statistics (upstream logs torch.cuda.max_memory_allocated / max_memory_reserved). Goes through
// c10's device-generic allocator interface, so no CUDA headers are needed to build it; the CUDA
// allocator is registered when libc10_cuda is loaded (stages link torch_cuda).
// Every entry point catches C++ exceptions and reports failure as a negative value.

#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

namespace {
constexpr size_t kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);

c10::CachingDeviceAllocator::DeviceStats stats(int device) {
  return c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
}
}  // namespace

extern "C" {

// Peak bytes allocated by tensors on `device` since start or the last reset; -1 on failure.
int64_t pgolf_cuda_peak_allocated(int device) {
  try {
    return stats(device).allocated_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Peak bytes reserved by the caching allocator (roughly what nvidia-smi sees); -1 on failure.
int64_t pgolf_cuda_peak_reserved(int device) {
  try {
    return stats(device).reserved_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Returns cached, unused blocks to the driver (torch.cuda.empty_cache()); 0 on success.
int pgolf_cuda_empty_cache(int device) {
  try {
    (void)device;
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->emptyCache();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Resets the peaks; 0 on success, -1 on failure.
int pgolf_cuda_reset_peak(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}
}
