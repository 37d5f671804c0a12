// Where a tensor's storage lives. The CPU path is always built; CUDA storage exists only when qx is
// compiled with QX_USE_CUDA. Device dispatch happens in one place: qx::dispatch.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <ostream>
#include <utility>

QX_NAMESPACE_BEGIN

enum class Device { cpu, cuda };

inline const char* to_string(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }
inline std::ostream& operator<<(std::ostream& out, Device device) { return out << to_string(device); }

/// Runs `cpu()` or `cuda()` for `device`; the single place where kernels branch on the device.
template <class Cpu, class Cuda>
decltype(auto) dispatch(Device device, const char* op, Cpu&& cpu, Cuda&& cuda) {
  if (device == Device::cpu) return std::forward<Cpu>(cpu)();
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  return std::forward<Cuda>(cuda)();
#else
  (void)cuda;
  fail(op, ": tensor is on device cuda but qx was built without CUDA (QX_USE_CUDA=OFF)");
#endif
}

QX_NAMESPACE_END
