// qx::Tensor<T>: an N-d array (shape, strides, offset) over shared aligned Storage, plus the autograd
// metadata a tensor carries (requires_grad, grad, grad_fn). Layout is NCHW row-major as in
// docs/conventions; views (reshape of a contiguous tensor, slice, detach) share storage. Copying a
// Tensor copies the handle, not the data — use clone() for a deep copy.
#pragma once
#include "qx/config.hpp"
#include "qx/core/device.hpp"
#include "qx/core/error.hpp"
#include "qx/core/random.hpp"
#include "qx/core/shape.hpp"
#include "qx/core/storage.hpp"

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

QX_NAMESPACE_BEGIN

template <class T>
class Tensor;
namespace autograd {
template <class T>
class Node;
}

namespace detail {
/// Autograd state of one tensor. Leaves (no grad_fn) accumulate their gradient in `grad`;
/// non-leaves store it only when `retains_grad` is set (used to capture a layer's gradient).
template <class T>
struct AutogradMeta {
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<Tensor<T>> grad;
  std::shared_ptr<autograd::Node<T>> grad_fn;
};
}  // namespace detail

/**
 * @brief N-d array of float or double with shared storage and reverse-mode autograd metadata.
 * @code
 * auto x = qx::Tensor<float>::randn({2, 3, 8, 8}, rng).requires_grad_();
 * auto y = qx::ops::relu(x);   // y.grad_fn() is the ReLU node
 * @endcode
 */
template <class T>
class Tensor {
  static_assert(std::is_arithmetic_v<T>, "qx::Tensor holds arithmetic types");

 public:
  using value_type = T;

  /// An undefined tensor (defined() is false); the value of "no tensor".
  Tensor() = default;

  /// A zero-filled tensor of `shape`.
  explicit Tensor(const Shape& shape, Device device = Device::cpu) : Tensor(empty(shape, device)) { fill_(T(0)); }

  static Tensor empty(const Shape& shape, Device device = Device::cpu) {
    for (Index d : shape) check(d >= 0, "Tensor: negative dimension in shape ", shape_str(shape));
    Tensor t;
    t.storage_ = Storage<T>(static_cast<std::size_t>(qx::numel(shape)), device);
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    return t;
  }
  static Tensor zeros(const Shape& shape, Device device = Device::cpu) { return Tensor(shape, device); }
  static Tensor full(const Shape& shape, T value) {
    auto t = empty(shape);
    t.fill_(value);
    return t;
  }
  static Tensor ones(const Shape& shape) { return full(shape, T(1)); }
  /// A tensor of `shape` holding `values` in row-major order.
  static Tensor from(const Shape& shape, const std::vector<T>& values) {
    check(static_cast<Index>(values.size()) == qx::numel(shape), "Tensor::from: ", values.size(),
          " values do not fill shape ", shape_str(shape));
    auto t = empty(shape);
    std::copy(values.begin(), values.end(), t.data());
    return t;
  }
  static Tensor randn(const Shape& shape, Rng& rng, double mean = 0.0, double stddev = 1.0) {
    auto t = empty(shape);
    for (T& v : t.span()) v = static_cast<T>(rng.normal(mean, stddev));
    return t;
  }
  static Tensor uniform(const Shape& shape, Rng& rng, double lo = 0.0, double hi = 1.0) {
    auto t = empty(shape);
    for (T& v : t.span()) v = static_cast<T>(rng.uniform(lo, hi));
    return t;
  }
  /// Zero-copy view of caller-owned contiguous memory; the caller keeps `data` alive.
  static Tensor wrap(T* data, const Shape& shape) {
    Tensor t;
    t.storage_ = Storage<T>::borrow(data, static_cast<std::size_t>(qx::numel(shape)));
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    return t;
  }

  // ---- shape and layout -------------------------------------------------------------------------
  bool defined() const noexcept { return storage_.data() != nullptr || (!shape_.empty() && qx::numel(shape_) == 0); }
  const Shape& shape() const noexcept { return shape_; }
  const Shape& strides() const noexcept { return strides_; }
  Index offset() const noexcept { return offset_; }
  Index dim() const noexcept { return static_cast<Index>(shape_.size()); }
  Index numel() const noexcept { return qx::numel(shape_); }
  /// Size of dimension d; negative d counts from the end.
  Index size(Index d) const {
    const Index r = d < 0 ? d + dim() : d;
    check(r >= 0 && r < dim(), "Tensor::size: dimension ", d, " out of range for shape ", shape_str(shape_));
    return shape_[static_cast<std::size_t>(r)];
  }
  Device device() const noexcept { return storage_.device(); }
  bool is_contiguous() const noexcept { return strides_ == contiguous_strides(shape_); }
  /// True when this handle is the only view of memory qx allocated: writing to it in place cannot
  /// change any other tensor (the autograd engine sums gradients in place when this holds).
  bool is_sole_owner() const noexcept { return storage_.owned() && storage_.use_count() == 1; }
  /// True when both tensors are views of the same storage.
  bool shares_storage_with(const Tensor& other) const noexcept { return storage_.data() == other.storage_.data(); }

  // ---- element access ---------------------------------------------------------------------------
  T* data() noexcept { return storage_.data() + offset_; }
  const T* data() const noexcept { return storage_.data() + offset_; }
  /// The elements of a contiguous tensor as a span.
  std::span<T> span() {
    check_host("Tensor::span");
    check(is_contiguous(), "Tensor::span: tensor of shape ", shape_str(shape_), " is not contiguous");
    return {data(), static_cast<std::size_t>(numel())};
  }
  std::span<const T> span() const {
    check_host("Tensor::span");
    check(is_contiguous(), "Tensor::span: tensor of shape ", shape_str(shape_), " is not contiguous");
    return {data(), static_cast<std::size_t>(numel())};
  }
  /// Bounds-checked element access by multi-index.
  T& at(std::initializer_list<Index> index) { return data()[checked_offset(index)]; }
  const T& at(std::initializer_list<Index> index) const { return data()[checked_offset(index)]; }
  /// Element `i` of the row-major enumeration (works for strided views too).
  T flat(Index i) const {
    Index off = 0;
    for (Index d = dim() - 1; d >= 0; --d) {
      const auto du = static_cast<std::size_t>(d);
      off += (i % shape_[du]) * strides_[du];
      i /= shape_[du];
    }
    return data()[off];
  }
  /// The single value of a one-element tensor.
  T item() const {
    check(numel() == 1, "Tensor::item: tensor of shape ", shape_str(shape_), " has ", numel(), " elements, not 1");
    if (device() != Device::cpu) return to(Device::cpu).item();
    return data()[0];
  }
  std::vector<T> to_vector() const {
    if (device() != Device::cpu) return to(Device::cpu).to_vector();
    std::vector<T> out(static_cast<std::size_t>(numel()));
    for (Index i = 0; i < numel(); ++i) out[static_cast<std::size_t>(i)] = flat(i);
    return out;
  }

  // ---- copies and views (no autograd: these act on data; ops:: versions record the graph) --------
  Tensor& fill_(T value) {
    if (device() != Device::cpu) return copy_(full(shape_, value));
    if (is_contiguous()) {
      std::fill_n(data(), numel(), value);
    } else {
      for_each_offset([&](Index off) { data()[off] = value; });
    }
    return *this;
  }
  /// A contiguous tensor with the same values; *this itself when already contiguous.
  Tensor contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
  }
  /// A deep, contiguous copy without autograd history.
  Tensor clone() const {
    if (device() != Device::cpu) {  // device-to-device when contiguous; through the host otherwise
      if (!is_contiguous()) return to(Device::cpu).to(device());
      auto out = empty(shape_, device());
      cuda::copy(out.data(), device(), data(), device(), static_cast<std::size_t>(numel()) * sizeof(T));
      return out;
    }
    auto out = empty(shape_, device());
    T* dst = out.data();
    if (is_contiguous()) {
      std::copy_n(data(), numel(), dst);
    } else {
      Index i = 0;
      for_each_offset([&](Index off) { dst[i++] = data()[off]; });
    }
    return out;
  }
  /// Copies `src`'s values into *this (same shape).
  Tensor& copy_(const Tensor& src) {
    check(src.shape_ == shape_, "Tensor::copy_: source shape ", shape_str(src.shape_), " differs from ", shape_str(shape_));
    if (device() != Device::cpu || src.device() != Device::cpu) {
      check(is_contiguous(), "Tensor::copy_: a ", device(), " destination must be contiguous, got shape ", shape_str(shape_));
      const Tensor from = src.device() == Device::cpu ? src.contiguous() : src.clone();
      cuda::copy(data(), device(), from.data(), from.device(), static_cast<std::size_t>(numel()) * sizeof(T));
      return *this;
    }
    if (is_contiguous() && src.is_contiguous()) {
      std::copy_n(src.data(), numel(), data());
    } else {
      Index i = 0;
      for_each_offset([&](Index off) { data()[off] = src.flat(i++); });
    }
    return *this;
  }
  /// A view with another shape over the same storage (needs a contiguous tensor); one dim may be -1.
  Tensor view(Shape shape) const {
    check(is_contiguous(), "Tensor::view: tensor of shape ", shape_str(shape_), " is not contiguous");
    Index known = 1, infer = -1;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == -1) {
        check(infer < 0, "Tensor::view: more than one -1 in ", shape_str(shape));
        infer = static_cast<Index>(d);
      } else {
        known *= shape[d];
      }
    }
    if (infer >= 0) {
      check(known > 0 && numel() % known == 0, "Tensor::view: cannot view ", shape_str(shape_), " as ", shape_str(shape));
      shape[static_cast<std::size_t>(infer)] = numel() / known;
    }
    check(qx::numel(shape) == numel(), "Tensor::view: cannot view ", shape_str(shape_), " (", numel(), " elements) as ",
          shape_str(shape));
    Tensor t = detach();
    t.shape_ = std::move(shape);
    t.strides_ = contiguous_strides(t.shape_);
    return t;
  }
  /// A view of indices [begin, end) along dimension d.
  Tensor slice(Index d, Index begin, Index end) const {
    const Index n = size(d);
    const auto du = static_cast<std::size_t>(d < 0 ? d + dim() : d);
    check(0 <= begin && begin <= end && end <= n, "Tensor::slice: range [", begin, ", ", end, ") out of bounds for dimension ",
          d, " of shape ", shape_str(shape_));
    Tensor t = detach();
    t.offset_ += begin * strides_[du];
    t.shape_[du] = end - begin;
    return t;
  }
  /// The same data without autograd history (shares storage).
  Tensor detach() const {
    Tensor t;
    t.storage_ = storage_;
    t.shape_ = shape_;
    t.strides_ = strides_;
    t.offset_ = offset_;
    return t;
  }
  /// This tensor on `device`: *this when it is there already, else a contiguous copy (no autograd
  /// history; a host↔device copy that returns when complete).
  Tensor to(Device device) const {
    if (device == this->device()) return *this;
    if (this->device() != Device::cpu && !is_contiguous()) {  // the whole storage to the host, then the view's elements
      Tensor whole = empty({static_cast<Index>(storage_.size())});
      cuda::copy(whole.data(), Device::cpu, storage_.data(), this->device(), storage_.size() * sizeof(T));
      Tensor view = whole;
      view.shape_ = shape_;
      view.strides_ = strides_;
      view.offset_ = offset_;
      return view.clone().to(device);
    }
    const Tensor src = contiguous();
    auto out = empty(shape_, device);
    cuda::copy(out.data(), device, src.data(), src.device(), static_cast<std::size_t>(numel()) * sizeof(T));
    return out;
  }
  /// A copy converted to another scalar type.
  template <class U>
  Tensor<U> to() const {
    if (device() != Device::cpu) return to(Device::cpu).template to<U>();
    auto out = Tensor<U>::empty(shape_);
    U* dst = out.data();
    for (Index i = 0; i < numel(); ++i) dst[i] = static_cast<U>(flat(i));
    return out;
  }

  // ---- autograd ---------------------------------------------------------------------------------
  bool requires_grad() const noexcept { return meta_ && meta_->requires_grad; }
  /// Marks a leaf as needing its gradient; a backward accumulates into grad().
  Tensor& requires_grad_(bool on = true) {
    check(!grad_fn(), "Tensor::requires_grad_: only leaves (tensors made by no op) can change requires_grad");
    ensure_meta().requires_grad = on;
    return *this;
  }
  /// Keeps the gradient that reaches this non-leaf tensor in the next backward (in grad()).
  Tensor& retain_grad() {
    check(requires_grad(), "Tensor::retain_grad: tensor of shape ", shape_str(shape_), " does not require grad");
    ensure_meta().retains_grad = true;
    return *this;
  }
  bool has_grad() const noexcept { return meta_ && meta_->grad; }
  /// The accumulated gradient (same shape); throws when no backward has reached this tensor.
  const Tensor& grad() const {
    check(has_grad(), "Tensor::grad: tensor of shape ", shape_str(shape_), " has no gradient (no backward reached it)");
    return *meta_->grad;
  }
  Tensor& grad() {
    check(has_grad(), "Tensor::grad: tensor of shape ", shape_str(shape_), " has no gradient (no backward reached it)");
    return *meta_->grad;
  }
  /// Drops the accumulated gradient.
  void zero_grad() {
    if (meta_) meta_->grad.reset();
  }
  const std::shared_ptr<autograd::Node<T>>& grad_fn() const {
    static const std::shared_ptr<autograd::Node<T>> none;
    return meta_ ? meta_->grad_fn : none;
  }
  bool is_leaf() const noexcept { return !meta_ || !meta_->grad_fn; }

  /// Internal: the autograd metadata (created on demand). Used by the autograd engine and ops.
  detail::AutogradMeta<T>& ensure_meta() {
    if (!meta_) meta_ = std::make_shared<detail::AutogradMeta<T>>();
    return *meta_;
  }
  const std::shared_ptr<detail::AutogradMeta<T>>& meta() const noexcept { return meta_; }

 private:
  void check_host(const char* op) const {
    check(device() == Device::cpu, op, ": tensor of shape ", shape_str(shape_), " is on device ", device(),
          "; copy it to the host first (to(Device::cpu))");
  }
  Index checked_offset(std::initializer_list<Index> index) const {
    check_host("Tensor::at");
    check(static_cast<Index>(index.size()) == dim(), "Tensor::at: ", index.size(), " indices for a tensor of rank ", dim());
    Index off = 0;
    std::size_t d = 0;
    for (Index i : index) {
      check(i >= 0 && i < shape_[d], "Tensor::at: index ", i, " out of range for dimension ", d, " of shape ",
            shape_str(shape_));
      off += i * strides_[d++];
    }
    return off;
  }
  template <class F>
  void for_each_offset(F&& f) const {
    const Index n = numel();
    for (Index i = 0; i < n; ++i) {
      Index off = 0, rest = i;
      for (Index d = dim() - 1; d >= 0; --d) {
        const auto du = static_cast<std::size_t>(d);
        off += (rest % shape_[du]) * strides_[du];
        rest /= shape_[du];
      }
      f(off);
    }
  }

  Storage<T> storage_;
  Shape shape_;
  Shape strides_;
  Index offset_ = 0;
  std::shared_ptr<detail::AutogradMeta<T>> meta_;
};

QX_NAMESPACE_END
