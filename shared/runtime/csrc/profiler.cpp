// libtorch's Kineto profiler (what Python's torch.profiler drives), which tch does not expose:
// record CPU ops and CUDA kernels between start and stop and save a Chrome trace, so the GPU time
// of our step can be split by kernel exactly as bench/profile_micro_batch.py does for upstream.
// Every entry point catches C++ exceptions and reports them in `err`.

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <exception>
#include <set>
#include <string>

namespace {
namespace prof = torch::profiler::impl;

void report(const std::exception& e, char* err, size_t len) {
  std::snprintf(err, len, "%s", e.what());
}

std::set<prof::ActivityType> activities() { return {prof::ActivityType::CPU, prof::ActivityType::CUDA}; }
}  // namespace

extern "C" {

int pgolf_profiler_start(char* err, size_t len) {
  try {
    prof::ProfilerConfig config(prof::ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(config, activities());
    torch::autograd::profiler::enableProfiler(config, activities());
    return 0;
  } catch (const std::exception& e) {
    report(e, err, len);
    return -1;
  }
}

// Stops recording and writes the Chrome trace (JSON) to `path`.
int pgolf_profiler_stop(const char* path, char* err, size_t len) {
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    result->save(path);
    return 0;
  } catch (const std::exception& e) {
    report(e, err, len);
    return -1;
  }
}
}
