// PyTorch's distributed engine (c10d) for pgolf: the TCPStore rendezvous, the Gloo process group
// (CPU tensors), and the collectives of any c10d backend (Gloo here, NCCL from nccl.cpp) behind a
// C ABI that src/ffi.rs calls. The collectives themselves are c10d's; this file only builds the
// objects, issues one call and waits for it.
//
// Handles: a store or a group is a heap `c10::intrusive_ptr<...>` that Rust owns and frees with
// the matching `_free`. Tensors come in as tch's `at::Tensor*`, borrowed for the call.
// Errors: every entry point catches C++ exceptions and reports the message (without c10's C++
// backtrace) through `err` (returns nonzero or null).
//
// ProcessGroupGloo.hpp includes Gloo's headers, which the wheel does not ship: host_only/gloo/
// declares what that header needs (see host_only/README.md); the static_assert below pins the
// class size the shim allocates to the one libtorch itself allocates (read from libtorch_cpu's
// own `new ProcessGroupGloo` in `ProcessGroupGloo::split`: 0x1e8 bytes in torch 2.11.0).

#define USE_C10D_GLOO 1

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <c10/util/Exception.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

static_assert(sizeof(c10d::ProcessGroupGloo) == 0x1e8,
              "ProcessGroupGloo's size differs from libtorch 2.11.0's: re-check host_only/gloo");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 0xb0,
              "ProcessGroupGloo::Options' size differs from libtorch 2.11.0's: re-check host_only/gloo");

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

// Waits for one collective; Gloo blocks here until done or `timeout`, NCCL only orders the
// current CUDA stream after the collective (its watchdog enforces the group's timeout).
void finish(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  auto timeout = timeout_ms > 0 ? std::chrono::milliseconds(timeout_ms) : kNoTimeout;
  if (!work->wait(timeout)) throw std::runtime_error("collective did not complete");
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    default:
      throw std::runtime_error("unknown reduce op " + std::to_string(op));
  }
}

BackendPtr& group(void* g) { return *static_cast<BackendPtr*>(g); }

}  // namespace

extern "C" {

// A TCPStore at host:port. `is_server`: this process hosts it (port 0 picks a free port, see
// pgolf_dist_store_port) and, with `wait_workers`, waits until `world` clients have joined.
// `prefix` (may be empty) namespaces every key, as torchrun's agent store requires.
void* pgolf_dist_store_new(const char* host, int port, int world, int is_server, int wait_workers,
                           int64_t timeout_ms, const char* prefix, char* err, size_t len) {
  StorePtr* out = nullptr;
  guarded(err, len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    if (world > 0) opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = wait_workers != 0;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    StorePtr store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    if (prefix != nullptr && prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    out = new StorePtr(std::move(store));
  });
  return out;
}

// The port a TCPStore (not prefixed) listens on or connects to; -1 for other stores.
int pgolf_dist_store_port(void* s) {
  auto* tcp = dynamic_cast<c10d::TCPStore*>(static_cast<StorePtr*>(s)->get());
  return tcp == nullptr ? -1 : static_cast<int>(tcp->getPort());
}

// A namespace inside a store (each group gets its own, so keys never collide).
void* pgolf_dist_store_prefixed(void* s, const char* prefix, char* err, size_t len) {
  StorePtr* out = nullptr;
  guarded(err, len, [&] {
    out = new StorePtr(c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), *static_cast<StorePtr*>(s)));
  });
  return out;
}

void pgolf_dist_store_free(void* s) { delete static_cast<StorePtr*>(s); }

// A Gloo group over `store`. Gloo's devices as torch.distributed makes them: one per interface in
// GLOO_SOCKET_IFNAME (comma-separated) when set, else the default (this host's name, falling back
// to loopback); two worker threads per device.
void* pgolf_dist_gloo_new(void* store, int rank, int size, int64_t timeout_ms, char* err, size_t len) {
  BackendPtr* out = nullptr;
  guarded(err, len, [&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifnames != nullptr && std::strlen(ifnames) > 0) {
      std::string list(ifnames);
      size_t start = 0;
      while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        if (end > start) {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(start, end - start)));
        }
        start = end + 1;
      }
    }
    if (opts->devices.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = static_cast<int>(opts->devices.size()) * 2;
    BackendPtr pg = c10::make_intrusive<c10d::ProcessGroupGloo>(*static_cast<StorePtr*>(store), rank, size, opts);
    out = new BackendPtr(std::move(pg));
  });
  return out;
}

void pgolf_dist_group_free(void* g) { delete static_cast<BackendPtr*>(g); }

// Ends the backend before it is freed: `shutdown` after a clean run (NCCL warns when a group is
// destroyed without it), `abort` after a failure (does not wait for peers that may be gone).
// Errors are swallowed: this runs on the way out, from a destructor.
void pgolf_dist_group_shutdown(void* g, int abort) {
  try {
    if (abort != 0) {
      group(g)->abort();
    } else {
      group(g)->shutdown();
    }
  } catch (...) {
  }
}

// The backend's own name ("gloo", "nccl") into `name`.
void pgolf_dist_group_name(void* g, char* name, size_t len) { report(name, len, group(g)->getBackendName()); }

// In place: `t` ← op over ranks of `t` (op 0 SUM, 1 MAX).
int pgolf_dist_all_reduce(void* g, at::Tensor* t, int op, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    finish(group(g)->allreduce(tensors, opts), timeout_ms);
  });
}

// In place: `t` ← rank `root`'s `t`.
int pgolf_dist_broadcast(void* g, at::Tensor* t, int root, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    finish(group(g)->broadcast(tensors, opts), timeout_ms);
  });
}

// `out` (world × numel(in) elements, contiguous) ← every rank's `in`, in rank order.
int pgolf_dist_all_gather(void* g, at::Tensor* out, at::Tensor* in, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] { finish(group(g)->_allgather_base(*out, *in), timeout_ms); });
}

// `out` ← the SUM over ranks of this rank's chunk of `in` (world × numel(out) elements).
int pgolf_dist_reduce_scatter_sum(void* g, at::Tensor* out, at::Tensor* in, int64_t timeout_ms, char* err,
                                  size_t len) {
  return guarded(err, len, [&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    finish(group(g)->_reduce_scatter_base(*out, *in, opts), timeout_ms);
  });
}

int pgolf_dist_barrier(void* g, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] { finish(group(g)->barrier(), timeout_ms); });
}

}  // extern "C"
