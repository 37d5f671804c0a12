// The caching host allocator behind every tensor's storage and every kernel's scratch buffer.
// A training step or an attribution pass allocates the same sizes every time; handing each one back to
// the C library makes glibc unmap large blocks (and trim small ones), so the next step pays a page fault
// and a page zeroing per 4 KiB again. qx keeps freed blocks in per-size-class free lists instead and
// hands them out again: in steady state no step asks the system for memory. Blocks go back to the system
// only past the cache limit, on qx::memory::trim(), or at exit. Semantics and the choice: docs/memory.md.
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

QX_NAMESPACE_BEGIN
namespace memory {

/// What the caching allocator holds, in bytes and counts, since the start or the last reset_peak().
struct Stats {
  std::size_t in_use_bytes = 0;         ///< handed out and not yet freed (size-class bytes)
  std::size_t cached_bytes = 0;         ///< freed blocks kept for reuse
  std::size_t peak_in_use_bytes = 0;    ///< highest in_use_bytes
  std::size_t limit_bytes = 0;          ///< cached_bytes never exceeds this
  std::uint64_t system_allocations = 0; ///< blocks obtained from the system
  std::uint64_t system_frees = 0;       ///< blocks returned to the system
  std::uint64_t cache_hits = 0;         ///< requests served from the cache
};

/// Every block is aligned to this: one cache line, the width of an AVX-512 vector.
inline constexpr std::size_t alignment = 64;
/// Requests below this many bytes go straight to the C library, whose small-block heap already reuses
/// memory without system calls; caching them would only add a lock to every small tensor.
inline constexpr std::size_t min_cached_bytes = 16 * 1024;

/**
 * The size class of a request of `bytes` in (2^(b−1), 2^b]: the next multiple of 2^(b−1)/8, i.e. one of
 * 2^(b−1)·(1 + i/8), i = 1…8 — eight classes per doubling, so a block wastes less than 1/8 of its size.
 * Requests below min_cached_bytes are rounded to the alignment only.
 */
constexpr std::size_t size_class(std::size_t bytes) {
  if (bytes <= alignment) return alignment;
  if (bytes < min_cached_bytes) return (bytes + alignment - 1) / alignment * alignment;
  const int b = std::bit_width(bytes - 1);  // bytes ≤ 2^b
  const std::size_t step = std::size_t{1} << (b - 4);  // 2^(b−1)/8: eight steps from 2^(b−1) to 2^b
  return (bytes + step - 1) / step * step;
}

namespace detail {
inline std::size_t default_limit() {
  std::size_t physical = std::size_t{8} << 30;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) physical = static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
#endif
  return physical / 4;  // a quarter of the machine: room for any model this library trains on a CPU
}

/// Where the host cache gets its blocks: 64-byte aligned operator new. The device cache (core/cuda.hpp)
/// plugs cudaMalloc into the same CachingAllocator.
struct HostSystem {
  static constexpr const char* name = "memory";
  /// Requests below min_cached_bytes skip the cache.
  static bool bypasses_cache(std::size_t size) noexcept { return size < min_cached_bytes; }
  /// Null when the system has no block this large. The block's pages are written once, here: a cached block
  /// is reused by many users, and one that only a later user writes to its end would fault then, in a
  /// step after the warm-up (a thousand faults at a random step of a resnet50 run once per-thread partial
  /// sums stopped zeroing their whole part). Mapped here, every page is mapped in the step that asked
  /// the system for the block; the price is that a block's unused tail is resident too (peak resident
  /// memory of a resnet50 step 2.0 → 2.1 GiB).
  static void* allocate(std::size_t size) noexcept {
    void* p = ::operator new(size, std::align_val_t{alignment}, std::nothrow);
    if (p)
      for (std::size_t at = 0; at < size; at += page_bytes) static_cast<volatile char*>(p)[at] = 0;
    return p;
  }
  /// The smallest page any supported system maps: writing one byte per this many maps every page.
  static constexpr std::size_t page_bytes = 4096;
  /// Below min_cached_bytes: straight from the C library, throwing std::bad_alloc as any new would.
  static void* allocate_uncached(std::size_t size) { return ::operator new(size, std::align_val_t{alignment}); }
  static void release(void* p) noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  static std::size_t default_limit() { return qx::memory::detail::default_limit(); }
};

/// A process-wide cache of one memory system's blocks. Lock-protected: allocations happen once per op
/// call, never in inner loops.
template <class System>
class CachingAllocator {
 public:
  static CachingAllocator& instance() {
    // Never destroyed: tensors in static storage may be freed after other statics are gone.
    static CachingAllocator* allocator = new CachingAllocator();
    return *allocator;
  }

  void* allocate(std::size_t bytes) {
    const std::size_t size = size_class(bytes);
    if (System::bypasses_cache(size)) return System::allocate_uncached(size);
    {
      std::lock_guard lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
        ++stats_.cache_hits;
        note_in_use(size);
        return p;
      }
    }
    void* p = system_allocate(size);
    std::lock_guard lock(mutex_);
    ++stats_.system_allocations;
    note_in_use(size);
    return p;
  }

  void deallocate(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    const std::size_t size = size_class(bytes);
    if (System::bypasses_cache(size)) {
      System::release(p);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      stats_.in_use_bytes -= size;
      if (stats_.cached_bytes + size <= stats_.limit_bytes) {
#if QX_EXCEPTIONS
        try {
          free_[size].push_back(p);
          stats_.cached_bytes += size;
          return;
        } catch (...) {  // no memory for the list itself: give the block back instead
        }
#else
        free_[size].push_back(p);
        stats_.cached_bytes += size;
        return;
#endif
      }
      ++stats_.system_frees;
    }
    System::release(p);
  }

  /// Returns every cached block to the system.
  void trim() noexcept {
    std::unordered_map<std::size_t, std::vector<void*>> blocks;
    {
      std::lock_guard lock(mutex_);
      blocks.swap(free_);
      for (const auto& [size, list] : blocks) stats_.system_frees += list.size();
      stats_.cached_bytes = 0;
    }
    for (auto& [size, list] : blocks)
      for (void* p : list) System::release(p);
  }

  void set_limit(std::size_t bytes) {
    {
      std::lock_guard lock(mutex_);
      stats_.limit_bytes = bytes;
      if (stats_.cached_bytes <= bytes) return;
    }
    trim();  // simplest way under the new limit; the next step refills what it needs
  }

  Stats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard lock(mutex_);
    stats_.peak_in_use_bytes = stats_.in_use_bytes;
  }

 private:
  CachingAllocator() { stats_.limit_bytes = System::default_limit(); }

  void note_in_use(std::size_t size) {
    stats_.in_use_bytes += size;
    stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
  }

  void* system_allocate(std::size_t size) {
    // Never throwing: the cache may hold what the system lacks, so trim and try again.
    void* p = System::allocate(size);
    if (!p) {
      trim();
      p = System::allocate(size);
    }
    if (!p) fail(System::name, ": cannot allocate ", size, " bytes (", stats().in_use_bytes, " bytes in use by qx)");
    return p;
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;  // size class → free blocks
  Stats stats_;
};
using HostAllocator = CachingAllocator<HostSystem>;
}  // namespace detail

/// A snapshot of the host cache's counters.
inline Stats stats() { return detail::HostAllocator::instance().stats(); }
/// Returns every cached (free) block to the system; blocks in use are untouched.
inline void trim() noexcept { detail::HostAllocator::instance().trim(); }
/// Caps the bytes kept for reuse (default: a quarter of physical memory); 0 disables caching.
inline void set_cache_limit(std::size_t bytes) { detail::HostAllocator::instance().set_limit(bytes); }
/// Starts a new peak measurement at the current in-use figure.
inline void reset_peak() { detail::HostAllocator::instance().reset_peak(); }

/// Raw aligned memory from the cache: `bytes` uninitialised bytes, 64-byte aligned.
inline void* allocate(std::size_t bytes) { return detail::HostAllocator::instance().allocate(bytes); }
/// Gives back memory from allocate(); `bytes` must be the size that was asked for.
inline void deallocate(void* p, std::size_t bytes) noexcept { detail::HostAllocator::instance().deallocate(p, bytes); }

/**
 * @brief A kernel's scratch array of `n` uninitialised T from the cache, returned on destruction.
 * @code
 * qx::memory::Buffer<float> col(k * p);   // no page faults once the cache holds a block this size
 * @endcode
 */
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) : n_(n), data_(n ? static_cast<T*>(allocate(n * sizeof(T))) : nullptr) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : n_(std::exchange(o.n_, 0)), data_(std::exchange(o.data_, nullptr)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      n_ = std::exchange(o.n_, 0);
      data_ = std::exchange(o.data_, nullptr);
    }
    return *this;
  }
  ~Buffer() { release(); }

  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return n_; }
  T& operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  void release() noexcept {
    if (data_) deallocate(data_, n_ * sizeof(T));
    data_ = nullptr;
    n_ = 0;
  }
  std::size_t n_ = 0;
  T* data_ = nullptr;
};

}  // namespace memory
QX_NAMESPACE_END
