// Zero-copy adaptors between qx::Tensor and xtensor / Eigen. Both directions share memory: a view made
// here aliases the tensor's storage (keep the tensor alive while using it), and a tensor made from an
// xtensor or Eigen object borrows that object's memory (keep the object alive).
#pragma once
#include "qx/config.hpp"
#include "qx/core/tensor.hpp"

#include <Eigen/Core>
#include <xtensor/xadapt.hpp>

#include <vector>

QX_NAMESPACE_BEGIN

/// An xtensor expression over the tensor's elements, honouring its shape and strides (no copy).
template <class T>
auto as_xtensor(Tensor<T>& t) {
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  std::vector<std::ptrdiff_t> strides(t.strides().begin(), t.strides().end());
  // xtensor sizes an adapted buffer by its shape (Π shape), and reaches elements through the strides.
  return xt::adapt(t.data(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape, strides);
}

/// A row-major Eigen matrix view of a contiguous tensor flattened to (rows, numel / rows) (no copy).
template <class T>
Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> as_eigen_matrix(Tensor<T>& t, Index rows) {
  check(t.is_contiguous(), "as_eigen_matrix: tensor of shape ", shape_str(t.shape()), " is not contiguous");
  check(rows > 0 && t.numel() % rows == 0, "as_eigen_matrix: cannot view ", shape_str(t.shape()), " as ", rows, " rows");
  return {t.data(), rows, t.numel() / rows};
}

/// A row-major Eigen matrix view of a contiguous 2-D tensor (no copy).
template <class T>
auto as_eigen_matrix(Tensor<T>& t) {
  check(t.dim() == 2, "as_eigen_matrix: expected a 2-D tensor, got ", shape_str(t.shape()));
  return as_eigen_matrix(t, t.size(0));
}

/// A tensor that borrows the memory of a contiguous (row-major) xtensor container (no copy).
template <class Container>
auto tensor_from_xtensor(Container& c) {
  using T = typename Container::value_type;
  Shape shape(c.shape().begin(), c.shape().end());
  check(c.layout() == xt::layout_type::row_major, "tensor_from_xtensor: only row-major containers can be borrowed");
  return Tensor<T>::wrap(c.data(), shape);
}

/// A (rows, cols) tensor that borrows the memory of a row-major Eigen matrix (no copy).
template <class T, int Rows, int Cols>
Tensor<T> tensor_from_eigen(Eigen::Matrix<T, Rows, Cols, Eigen::RowMajor>& m) {
  return Tensor<T>::wrap(m.data(), {static_cast<Index>(m.rows()), static_cast<Index>(m.cols())});
}

QX_NAMESPACE_END
