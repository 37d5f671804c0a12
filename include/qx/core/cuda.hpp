// The CUDA runtime as qx uses it from host code (compiled by any C++ compiler; kernel launches are in
// backends/cuda/): availability, checked calls, the one stream every qx kernel and copy runs on, the
// caching device allocator (cudaMalloc, never managed memory) and host↔device copies. Without
// QX_USE_CUDA the same functions exist and fail with a message naming what is missing (docs/cuda.md).
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/device.hpp"
#include "qx/core/error.hpp"

#include <cstddef>
#include <cstring>
#include <vector>

#if defined(QX_USE_CUDA) && QX_USE_CUDA
#include <cuda_runtime_api.h>
#endif

QX_NAMESPACE_BEGIN
namespace cuda {

/// True when this build has the CUDA path (QX_USE_CUDA); whether a GPU is present is available().
#if defined(QX_USE_CUDA) && QX_USE_CUDA
inline constexpr bool built = true;
#else
inline constexpr bool built = false;
#endif

#if defined(QX_USE_CUDA) && QX_USE_CUDA
namespace detail {
/// qx::Error "<call> failed at <file>:<line>: <CUDA's error string>" unless `status` is cudaSuccess.
inline void check_call(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so the next call does not report it again
    fail(call, " failed at ", file, ":", line, ": ", cudaGetErrorString(status));
  }
}
}  // namespace detail
#define QX_CUDA_CHECK(expr) ::qx::cuda::detail::check_call((expr), #expr, __FILE__, __LINE__)
#endif

/// Why no GPU can be used, or an empty string when one can. Asked once per process.
inline const std::string& unavailable_reason() {
  static const std::string reason = [] {
#if defined(QX_USE_CUDA) && QX_USE_CUDA
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return ::qx::detail::concat("no usable GPU: cudaGetDeviceCount failed: ", cudaGetErrorString(status));
    }
    if (count == 0) return std::string("no usable GPU: cudaGetDeviceCount found 0 devices");
    return std::string();
#else
    return std::string("qx was built without CUDA (configure with -DQX_USE_CUDA=ON)");
#endif
  }();
  return reason;
}

/// True when this build has CUDA and a GPU is present.
inline bool available() { return unavailable_reason().empty(); }

/// Fails with "<who>: CUDA requested but <reason>" unless a GPU can be used.
inline void require(const char* who) {
  if (!available()) fail(who, ": CUDA requested but ", unavailable_reason());
}

#if defined(QX_USE_CUDA) && QX_USE_CUDA
/// The stream of every qx kernel launch and copy. One stream orders everything qx does on the GPU, which
/// is what lets the caching allocator hand a freed block to the next op without synchronising.
inline cudaStream_t stream() {
  static cudaStream_t s = [] {
    require("cuda::stream");
    cudaStream_t created = nullptr;
    QX_CUDA_CHECK(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking));
    return created;
  }();
  return s;
}
#endif

/// Waits for every qx kernel and copy issued so far.
inline void synchronize() {
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  QX_CUDA_CHECK(cudaStreamSynchronize(stream()));
#endif
}

/// Copies `bytes` from `src` on `from` to `dst` on `to`; returns when the copy is complete.
inline void copy(void* dst, Device to, const void* src, Device from, std::size_t bytes) {
  if (bytes == 0) return;
  if (to == Device::cpu && from == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  require("copy");
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  const cudaMemcpyKind kind = from == Device::cpu   ? cudaMemcpyHostToDevice
                              : to == Device::cpu   ? cudaMemcpyDeviceToHost
                                                    : cudaMemcpyDeviceToDevice;
  QX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  QX_CUDA_CHECK(cudaStreamSynchronize(stream()));  // the host buffer may be reused as soon as we return
#endif
}

/// Sets `bytes` bytes at device address `dst` to zero.
inline void zero(void* dst, std::size_t bytes) {
  require("zero");
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  QX_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
#else
  (void)dst;
  (void)bytes;
#endif
}

}  // namespace cuda

namespace memory {
namespace detail {
/// Where the device cache gets its blocks: cudaMalloc (256-byte aligned), never managed memory. Every
/// request is cached (there is no cheap small-block path on a GPU).
struct DeviceSystem {
  static constexpr const char* name = "cuda memory";
  static bool bypasses_cache(std::size_t) noexcept { return false; }
  static void* allocate(std::size_t size) noexcept {
#if defined(QX_USE_CUDA) && QX_USE_CUDA
    void* p = nullptr;
    if (cudaMalloc(&p, size) == cudaSuccess) return p;
    (void)cudaGetLastError();
#else
    (void)size;
#endif
    return nullptr;
  }
  static void* allocate_uncached(std::size_t size) { return allocate(size); }  // never reached: nothing bypasses the cache
  static void release(void* p) noexcept {
#if defined(QX_USE_CUDA) && QX_USE_CUDA
    (void)cudaFree(p);
#else
    (void)p;
#endif
  }
  /// Half of the GPU's memory may stay cached.
  static std::size_t default_limit() {
#if defined(QX_USE_CUDA) && QX_USE_CUDA
    std::size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return total_bytes / 2;
    (void)cudaGetLastError();
#endif
    return std::size_t{1} << 30;
  }
};
using DeviceAllocator = CachingAllocator<DeviceSystem>;
}  // namespace detail

/// Device memory from the device cache: `bytes` uninitialised bytes. Fails when no GPU can be used.
inline void* device_allocate(std::size_t bytes) {
  cuda::require("device memory");
  return detail::DeviceAllocator::instance().allocate(bytes);
}
/// Gives back memory from device_allocate(); `bytes` must be the size that was asked for.
inline void device_deallocate(void* p, std::size_t bytes) noexcept { detail::DeviceAllocator::instance().deallocate(p, bytes); }
/// The device cache's counters, and its trim / limit, as stats(), trim(), set_cache_limit() for the host.
inline Stats device_stats() { return detail::DeviceAllocator::instance().stats(); }
inline void device_trim() noexcept { detail::DeviceAllocator::instance().trim(); }
inline void set_device_cache_limit(std::size_t bytes) { detail::DeviceAllocator::instance().set_limit(bytes); }

/// A kernel's scratch array of `n` uninitialised T in device memory, from the device cache; returned on
/// destruction (safe while kernels using it are still queued: every qx kernel runs on one stream).
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n), data_(n ? static_cast<T*>(device_allocate(n * sizeof(T))) : nullptr) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_) device_deallocate(data_, n_ * sizeof(T));
  }
  T* data() const noexcept { return data_; }

 private:
  std::size_t n_;
  T* data_;
};

}  // namespace memory
QX_NAMESPACE_END
