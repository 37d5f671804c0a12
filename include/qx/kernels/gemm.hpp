// Row-major GEMM: C = α·op(A)·op(B) + β·C, op(X) = X or Xᵀ, with leading dimensions as in BLAS
// (row-major: lda is the distance between rows). Computed by Eigen's blocked GEMM through maps; β = 0
// means C's previous contents are ignored (may be uninitialised).
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"

#include <Eigen/Core>

QX_NAMESPACE_BEGIN
namespace kernels {
namespace detail {
template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using Map = Eigen::Map<RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
}  // namespace detail

/// C (m×n) = α·op(A)·op(B) + β·C with op(A) m×k and op(B) k×n, all row-major.
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          T beta, T* c, Index ldc) {
  if (m == 0 || n == 0) return;
  detail::Map<T> cm(c, m, n, Eigen::OuterStride<>(ldc));
  if (k == 0) {
    if (beta == T(0)) cm.setZero(); else cm *= beta;
    return;
  }
  const detail::ConstMap<T> am(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  const detail::ConstMap<T> bm(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  auto product = [&](const auto& lhs, const auto& rhs) {
    if (beta == T(0)) {
      cm.noalias() = alpha * (lhs * rhs);
    } else {
      if (beta != T(1)) cm *= beta;
      cm.noalias() += alpha * (lhs * rhs);
    }
  };
  if (!trans_a && !trans_b) product(am, bm);
  else if (trans_a && !trans_b) product(am.transpose(), bm);
  else if (!trans_a && trans_b) product(am, bm.transpose());
  else product(am.transpose(), bm.transpose());
}

}  // namespace kernels
QX_NAMESPACE_END
