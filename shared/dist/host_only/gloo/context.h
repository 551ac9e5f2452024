// Stand-in (see ../README.md): `gloo::Context` is held by shared_ptr; the one member an inline
// body of ProcessGroupGloo.hpp calls (`ProcessGroupGloo::setTimeout`) is declared, never defined.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
