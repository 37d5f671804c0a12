// The host side of the CUDA path that runs without a GPU: every way of asking for CUDA fails with one
// line naming what is missing (CUDA in the build, or a GPU in the machine), and the device cache is the
// host cache's logic with cudaMalloc plugged in — proven here with a counting memory system in its place.
#include <doctest/doctest.h>

#include "qx/backends/cuda/elementwise.hpp"
#include "qx/backends/cuda/gemm.hpp"
#include "qx/core/cuda.hpp"
#include "qx/core/tensor.hpp"

#include <string>
#include <vector>

using qx::Device;
using qx::Tensor;

namespace {
/// The reason every CUDA request gives on this machine: the build lacks CUDA, or the machine a GPU.
std::string expected_reason() {
  return qx::cuda::built ? "no usable GPU" : "qx was built without CUDA (configure with -DQX_USE_CUDA=ON)";
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const qx::Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("asking for CUDA without it names what is missing, at the first use") {
  if (qx::cuda::available()) return;  // a GPU machine: nothing is missing (tests/backends/parity covers it)
  CHECK_FALSE(qx::cuda::unavailable_reason().empty());
  const std::string reason = expected_reason();
  auto x = Tensor<float>::ones({2, 3});
  struct Case {
    std::string message, prefix;
  };
  const Case cases[] = {
      {error_of([] { (void)Tensor<float>::empty({2, 3}, Device::cuda); }), "Storage: CUDA requested but "},
      {error_of([&] { (void)x.to(Device::cuda); }), "Storage: CUDA requested but "},
      {error_of([] { (void)qx::memory::device_allocate(64); }), "device memory: CUDA requested but "},
      {error_of([&] { qx::cuda::copy(x.data(), Device::cuda, x.data(), Device::cpu, 8); }), "copy: CUDA requested but "},
  };
  for (const auto& c : cases) {
    CHECK_MESSAGE(c.message.rfind(c.prefix, 0) == 0, c.message);
    CHECK_MESSAGE(c.message.find(reason) != std::string::npos, c.message);
    CHECK(c.message.find('\n') == std::string::npos);
  }
  float a = 1, b = 2, c = 0;
  const std::string gemm = error_of([&] { qx::backends::cuda::gemm(false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1); });
  CHECK_MESSAGE(gemm.find(qx::cuda::built ? "cuBLAS: CUDA requested but no usable GPU" : "cuBLAS GEMM: qx was built without CUDA") !=
                    std::string::npos,
                gemm);
  if (!qx::cuda::built) {
    const std::string launch = error_of([&] { qx::backends::cuda::launch_on_device(qx::backends::cuda::Fill<float>{&c, 1, 0.0f}); });
    CHECK(launch.find("built without CUDA") != std::string::npos);
    const std::string dispatched = error_of([] { qx::dispatch(Device::cuda, "relu", [] {}, [] {}); });
    CHECK(dispatched == "relu: tensor is on device cuda but qx was built without CUDA (QX_USE_CUDA=OFF)");
  }
}

namespace {
/// A memory system that counts: what the device cache would ask of cudaMalloc / cudaFree.
struct CountingSystem {
  static constexpr const char* name = "counting memory";
  static inline int allocations = 0, releases = 0;
  static inline bool out_of_memory = false;
  static bool bypasses_cache(std::size_t) noexcept { return false; }
  static void* allocate(std::size_t size) noexcept {
    if (out_of_memory) return nullptr;
    ++allocations;
    return ::operator new(size, std::nothrow);
  }
  static void* allocate_uncached(std::size_t size) { return allocate(size); }
  static void release(void* p) noexcept {
    ++releases;
    ::operator delete(p);
  }
  static std::size_t default_limit() { return std::size_t{1} << 20; }
};
}  // namespace

TEST_CASE("the device cache (the host cache's logic over another memory system) reuses, limits, trims and reports") {
  auto& cache = qx::memory::detail::CachingAllocator<CountingSystem>::instance();
  // Small blocks are cached too: a GPU has no cheap small-block heap to fall back on.
  void* small = cache.allocate(100);
  cache.deallocate(small, 100);
  CHECK(cache.allocate(120) == small);  // same 128-byte class, no second system allocation
  CHECK(CountingSystem::allocations == 1);
  cache.deallocate(small, 120);
  // Past the limit, a freed block goes back to the system.
  void* big = cache.allocate(std::size_t{2} << 20);
  cache.deallocate(big, std::size_t{2} << 20);
  CHECK(CountingSystem::releases == 1);
  CHECK(cache.stats().cached_bytes == 128);
  // Out of memory: the cache is trimmed and the request tried again before the error names the system.
  CountingSystem::out_of_memory = true;
  const std::string message = error_of([&] { (void)cache.allocate(4096); });
  CHECK(message.rfind("counting memory: cannot allocate 4096 bytes", 0) == 0);
  CHECK(CountingSystem::releases == 2);  // the cached 128-byte block was released by the trim
  CHECK(cache.stats().cached_bytes == 0);
  CountingSystem::out_of_memory = false;
}
