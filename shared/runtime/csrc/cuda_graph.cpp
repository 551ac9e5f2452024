// CUDA graphs through libtorch's own at::cuda::CUDAGraph (tch does not expose them): capture a
// stretch of work issued from Rust (a micro-batch's forward and backward), then replay it with
// one launch. Capture and warm-up run on a side stream, as PyTorch requires; the caching
// allocator gives the graph a private memory pool.
// Every entry point catches C++ exceptions and reports them through `err` (returns nonzero/null).

#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <optional>

namespace {

struct Graph {
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStream> previous;
  explicit Graph(c10::DeviceIndex d) : device(d), side(c10::cuda::getStreamFromPool(false, d)) {}
};

// `waiter` waits for the work queued so far on `signaller` (an event through c10's device-generic
// interface, which keeps ATen's CUDA event header, and the fp16 headers it pulls in, out of this file).
void order(const c10::cuda::CUDAStream& signaller, const c10::cuda::CUDAStream& waiter) {
  c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  void* event = nullptr;
  impl.record(&event, signaller.unwrap(), signaller.device_index(), c10::EventFlag::PYTORCH_DEFAULT);
  impl.block(event, waiter.unwrap());
  impl.destroyEvent(event, signaller.device_index());
}

void report(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, what, len - 1);
    err[len - 1] = '\0';
  }
}

// The side stream becomes current, after the work already queued on the current stream.
void enter(Graph* g) {
  if (g->previous) throw std::runtime_error("already on the side stream");
  auto current = c10::cuda::getCurrentCUDAStream(g->device);
  order(current, g->side);
  g->previous = current;
  c10::cuda::setCurrentCUDAStream(g->side);
}

// Back to the previous stream, which waits for what the side stream did.
void leave(Graph* g) {
  if (!g->previous) throw std::runtime_error("not on the side stream");
  auto previous = *g->previous;
  order(g->side, previous);
  c10::cuda::setCurrentCUDAStream(previous);
  g->previous.reset();
}

template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    report(err, len, e.what());
  } catch (...) {
    report(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" {

void* pgolf_graph_new(int device, char* err, size_t len) {
  try {
    return new Graph(static_cast<c10::DeviceIndex>(device));
  } catch (const std::exception& e) {
    report(err, len, e.what());
  } catch (...) {
    report(err, len, "unknown C++ exception");
  }
  return nullptr;
}

void pgolf_graph_free(void* g) { delete static_cast<Graph*>(g); }

// Eager work between enter and leave runs on the side stream (warm-up before capture).
int pgolf_graph_enter(void* g, char* err, size_t len) {
  return guarded(err, len, [&] { enter(static_cast<Graph*>(g)); });
}

int pgolf_graph_leave(void* g, char* err, size_t len) {
  return guarded(err, len, [&] { leave(static_cast<Graph*>(g)); });
}

int pgolf_graph_capture_begin(void* g, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto* graph = static_cast<Graph*>(g);
    enter(graph);
    graph->graph.capture_begin();
  });
}

int pgolf_graph_capture_end(void* g, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto* graph = static_cast<Graph*>(g);
    graph->graph.capture_end();
    leave(graph);
  });
}

// Replays on the current stream.
int pgolf_graph_replay(void* g, char* err, size_t len) {
  return guarded(err, len, [&] { static_cast<Graph*>(g)->graph.replay(); });
}
}
