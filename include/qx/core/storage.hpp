// Reference-counted, 64-byte aligned storage. Tensors that are views of one another share one
// Storage; the memory is freed when the last view goes. Storage may also wrap memory the caller owns
// (zero-copy adaptors), in which case it never frees it.
#pragma once
#include "qx/config.hpp"
#include "qx/core/device.hpp"
#include "qx/core/error.hpp"

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

QX_NAMESPACE_BEGIN

inline constexpr std::size_t storage_alignment = 64;  // one cache line; the width of an AVX-512 vector

template <class T>
class Storage {
 public:
  Storage() = default;

  /// Allocates `size` elements, uninitialised, aligned to storage_alignment.
  explicit Storage(std::size_t size, Device device = Device::cpu) : size_(size), device_(device) {
    check(device == Device::cpu, "Storage: allocation on device ", device, " is not available in this build");
    if (size == 0) return;
    void* raw = ::operator new(size * sizeof(T), std::align_val_t{storage_alignment});
    data_ = std::shared_ptr<T>(static_cast<T*>(raw), [](T* p) { ::operator delete(p, std::align_val_t{storage_alignment}); });
  }

  /// Wraps caller-owned memory without copying; the caller keeps it alive while any view exists.
  static Storage borrow(T* data, std::size_t size, Device device = Device::cpu) {
    Storage s;
    s.size_ = size;
    s.device_ = device;
    s.data_ = std::shared_ptr<T>(data, [](T*) {});
    return s;
  }

  T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  Device device() const noexcept { return device_; }
  long use_count() const noexcept { return data_.use_count(); }

 private:
  std::shared_ptr<T> data_;
  std::size_t size_ = 0;
  Device device_ = Device::cpu;
};

QX_NAMESPACE_END
