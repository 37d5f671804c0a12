// The caching allocator (core/allocator.hpp): size classes, reuse without asking the system, the
// limit, trim, thread safety, and the scratch Buffer.
#include <doctest/doctest.h>

#include "qx/core/allocator.hpp"
#include "qx/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace mem = qx::memory;

TEST_CASE("size classes cover the request, waste under 1/8 above the small-block threshold, and grow") {
  std::size_t previous = 0;
  for (std::size_t bytes = 1; bytes < (std::size_t{1} << 26); bytes = bytes * 9 / 8 + 1) {
    const std::size_t cls = mem::size_class(bytes);
    CHECK(cls >= bytes);
    CHECK(cls % mem::alignment == 0);
    CHECK(cls >= previous);
    if (bytes >= mem::min_cached_bytes) CHECK(static_cast<double>(cls - bytes) < static_cast<double>(cls) / 8.0);
    previous = cls;
  }
  CHECK(mem::size_class(1 << 20) == (1 << 20));  // powers of two are classes
}

TEST_CASE("a freed block is handed out again without a system allocation") {
  mem::set_cache_limit(std::size_t{1} << 30);
  const std::size_t bytes = 3 * 1024 * 1024 + 17;
  void* first = mem::allocate(bytes);
  CHECK(reinterpret_cast<std::uintptr_t>(first) % mem::alignment == 0);
  mem::deallocate(first, bytes);
  const auto before = mem::stats();
  CHECK(before.cached_bytes >= mem::size_class(bytes));
  void* again = mem::allocate(bytes + 100);  // same size class (3.25 MiB)
  const auto after = mem::stats();
  CHECK(again == first);
  CHECK(after.system_allocations == before.system_allocations);
  CHECK(after.cache_hits == before.cache_hits + 1);
  CHECK(after.in_use_bytes == before.in_use_bytes + mem::size_class(bytes));
  mem::deallocate(again, bytes + 100);
}

#if defined(__linux__)
TEST_CASE("a block from the system has every page mapped before anyone writes it") {
  // A block's later user may write pages its first user never did; mapped on arrival, they cannot fault
  // in a step after the warm-up. mincore() tells which pages of a range are resident.
  mem::set_cache_limit(std::size_t{1} << 30);
  const std::size_t bytes = 5 * 1024 * 1024 + 123;  // a class no other test uses: from the system
  const auto before = mem::stats();
  void* block = mem::allocate(bytes);
  REQUIRE(mem::stats().system_allocations == before.system_allocations + 1);
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<std::uintptr_t>(block) / page * page;
  const std::size_t span = reinterpret_cast<std::uintptr_t>(block) + bytes - first;
  std::vector<unsigned char> resident((span + page - 1) / page);
  REQUIRE(mincore(reinterpret_cast<void*>(first), span, resident.data()) == 0);
  const auto missing = std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return (r & 1) == 0; });
  CHECK_MESSAGE(missing == 0, missing, " of ", resident.size(), " pages not resident");
  mem::deallocate(block, bytes);
}
#endif

TEST_CASE("tensors reuse their storage across iterations: steady state asks the system for nothing") {
  auto step = [] {
    auto a = qx::Tensor<float>::empty({64, 56, 56});
    auto b = qx::Tensor<float>::zeros({64, 56, 56});
    a.fill_(1.0f);
    return a.data()[0] + b.data()[0];
  };
  step();
  const auto before = mem::stats();
  for (int i = 0; i < 5; ++i) CHECK(step() == 1.0f);
  CHECK(mem::stats().system_allocations == before.system_allocations);
}

TEST_CASE("the limit and trim return cached blocks to the system") {
  const std::size_t bytes = 1 << 20;
  void* p = mem::allocate(bytes);
  mem::deallocate(p, bytes);
  CHECK(mem::stats().cached_bytes > 0);
  mem::trim();
  CHECK(mem::stats().cached_bytes == 0);
  mem::set_cache_limit(0);  // caching off: every free goes back to the system
  const auto before = mem::stats();
  p = mem::allocate(bytes);
  mem::deallocate(p, bytes);
  CHECK(mem::stats().cached_bytes == 0);
  CHECK(mem::stats().system_frees == before.system_frees + 1);
  mem::set_cache_limit(std::size_t{1} << 30);
  CHECK(mem::stats().limit_bytes == (std::size_t{1} << 30));
}

TEST_CASE("allocation from several threads at once keeps the counters consistent") {
  mem::trim();
  mem::reset_peak();
  const auto before = mem::stats();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        const std::size_t n = static_cast<std::size_t>(16384 + 4096 * ((i + t) % 7));
        mem::Buffer<float> buffer(n);
        std::fill_n(buffer.data(), n, static_cast<float>(i));  // the whole block is writable
      }
    });
  for (auto& th : threads) th.join();
  const auto after = mem::stats();
  CHECK(after.in_use_bytes == before.in_use_bytes);
  // The peak saw at least one thread's smallest buffer in use on top of what was there before.
  CHECK(after.peak_in_use_bytes >= before.in_use_bytes + mem::size_class(16384 * sizeof(float)));
}

TEST_CASE("Buffer moves ownership and frees once") {
  const auto before = mem::stats();
  {
    mem::Buffer<double> a(1 << 16);
    mem::Buffer<double> b(std::move(a));
    CHECK(a.data() == nullptr);
    CHECK(b.size() == (1 << 16));
    mem::Buffer<double> c;
    c = std::move(b);
    CHECK(c.data() != nullptr);
    CHECK(mem::stats().in_use_bytes == before.in_use_bytes + mem::size_class((1 << 16) * sizeof(double)));
  }
  CHECK(mem::stats().in_use_bytes == before.in_use_bytes);
}
