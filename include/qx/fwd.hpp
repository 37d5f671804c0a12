// Forward declarations of qx's main types, for headers that only name them.
#pragma once
#include "qx/config.hpp"

#include <cstdint>

QX_NAMESPACE_BEGIN
using Index = std::int64_t;
enum class Device;
class Error;
class Rng;
template <class T>
class Storage;
template <class T>
class Tensor;
class NoGradGuard;
namespace autograd {
template <class T>
class Node;
template <class T>
struct BackwardOptions;
}  // namespace autograd
namespace nn {
template <class T>
class Module;
}
QX_NAMESPACE_END
