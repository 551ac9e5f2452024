// Stand-in (see ../../README.md): Gloo's transport types appear only behind smart pointers.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
