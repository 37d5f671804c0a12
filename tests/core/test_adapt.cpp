// Zero-copy adaptors: writes through an xtensor or Eigen view reach the tensor and vice versa.
#include <doctest/doctest.h>

#include "qx/core/adapt.hpp"

#include <xtensor/xarray.hpp>
#include <xtensor/xview.hpp>

TEST_CASE_TEMPLATE("xtensor views alias the tensor, strided views included", T, float, double) {
  auto t = qx::Tensor<T>::from({2, 3}, {1, 2, 3, 4, 5, 6});
  auto xv = qx::as_xtensor(t);
  CHECK(xv(1, 2) == T(6));
  xv(0, 1) = T(20);
  CHECK(t.at({0, 1}) == T(20));
  auto column = t.slice(1, 2, 3);  // (2, 1), strides (3, 1)
  auto xc = qx::as_xtensor(column);
  CHECK(xc(0, 0) == T(3));
  CHECK(xc(1, 0) == T(6));
  xt::xarray<T> owner = {{1, 2}, {3, 4}};
  auto borrowed = qx::tensor_from_xtensor(owner);
  borrowed.at({1, 0}) = T(30);
  CHECK(owner(1, 0) == T(30));
}

TEST_CASE_TEMPLATE("Eigen maps alias the tensor", T, float, double) {
  auto t = qx::Tensor<T>::from({2, 3}, {1, 2, 3, 4, 5, 6});
  auto m = qx::as_eigen_matrix(t);
  CHECK(m(1, 0) == T(4));
  m(1, 1) = T(50);
  CHECK(t.at({1, 1}) == T(50));
  CHECK(m.rowwise().sum()(0) == T(6));
  Eigen::Matrix<T, 2, 2, Eigen::RowMajor> e;
  e << 1, 2, 3, 4;
  auto borrowed = qx::tensor_from_eigen(e);
  borrowed.at({0, 1}) = T(9);
  CHECK(e(0, 1) == T(9));
  auto image = qx::Tensor<T>::zeros({2, 3, 4, 5});
  CHECK(qx::as_eigen_matrix(image, 6).cols() == 20);
  CHECK_THROWS_AS(qx::as_eigen_matrix(image, 7), qx::Error);
}
