// Reference-counted, 64-byte aligned storage. Tensors that are views of one another share one
// Storage; the memory goes back to the caching allocator (core/allocator.hpp) when the last view goes.
// Storage may also wrap memory the caller owns (zero-copy adaptors), in which case it never frees it.
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/cuda.hpp"
#include "qx/core/device.hpp"
#include "qx/core/error.hpp"

#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

QX_NAMESPACE_BEGIN

inline constexpr std::size_t storage_alignment = memory::alignment;

template <class T>
class Storage {
 public:
  Storage() = default;

  /// Allocates `size` elements, uninitialised, from the host caching allocator (aligned to
  /// storage_alignment) or, on Device::cuda, from the device one (core/cuda.hpp; fails when CUDA is
  /// missing from the build or the machine).
  explicit Storage(std::size_t size, Device device = Device::cpu) : size_(size), device_(device) {
    if (device == Device::cuda) cuda::require("Storage");
    if (size == 0) return;
    check(size <= std::numeric_limits<std::size_t>::max() / sizeof(T), "Storage: ", size, " elements of ", sizeof(T),
          " bytes overflow the address space");
    const std::size_t bytes = size * sizeof(T);
    if (device == Device::cuda) {
      data_ = std::shared_ptr<T>(static_cast<T*>(memory::device_allocate(bytes)),
                                 [bytes](T* p) { memory::device_deallocate(p, bytes); });
      return;
    }
    data_ = std::shared_ptr<T>(static_cast<T*>(memory::allocate(bytes)), [bytes](T* p) { memory::deallocate(p, bytes); });
  }

  /// Wraps caller-owned memory without copying; the caller keeps it alive while any view exists.
  static Storage borrow(T* data, std::size_t size, Device device = Device::cpu) {
    Storage s;
    s.size_ = size;
    s.device_ = device;
    s.data_ = std::shared_ptr<T>(data, [](T*) {});
    s.borrowed_ = true;
    return s;
  }

  T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  Device device() const noexcept { return device_; }
  long use_count() const noexcept { return data_.use_count(); }
  /// True when qx allocated this memory (not borrowed from the caller).
  bool owned() const noexcept { return !borrowed_; }

 private:
  std::shared_ptr<T> data_;
  std::size_t size_ = 0;
  Device device_ = Device::cpu;
  bool borrowed_ = false;
};

QX_NAMESPACE_END
