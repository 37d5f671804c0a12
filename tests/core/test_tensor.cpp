// Tensor: construction, views sharing storage, strided copies, bounds and shape errors.
#include <doctest/doctest.h>

#include "qx/core/tensor.hpp"

TEST_CASE_TEMPLATE("tensor views share storage and copies do not", T, float, double) {
  auto a = qx::Tensor<T>::from({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(a.is_contiguous());
  CHECK(a.at({1, 2}) == T(6));
  auto v = a.view({3, 2});
  CHECK(v.shares_storage_with(a));
  v.at({0, 1}) = T(10);
  CHECK(a.at({0, 1}) == T(10));
  auto c = a.clone();
  CHECK_FALSE(c.shares_storage_with(a));
  auto inferred = a.view({-1});
  CHECK(inferred.shape() == qx::Shape{6});
}

TEST_CASE_TEMPLATE("slices are strided views", T, float, double) {
  auto a = qx::Tensor<T>::from({2, 4}, {0, 1, 2, 3, 4, 5, 6, 7});
  auto s = a.slice(1, 1, 3);
  CHECK(s.shape() == qx::Shape{2, 2});
  CHECK_FALSE(s.is_contiguous());
  CHECK(s.to_vector() == std::vector<T>{1, 2, 5, 6});
  auto c = s.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.to_vector() == std::vector<T>{1, 2, 5, 6});
  auto rows = a.slice(0, 1, 2);
  CHECK(rows.is_contiguous());
  CHECK(rows.data()[0] == T(4));
}

TEST_CASE("bad shapes and indices throw qx::Error naming the shape") {
  auto a = qx::Tensor<float>::zeros({2, 3});
  CHECK_THROWS_AS(a.view({4, 2}), qx::Error);
  CHECK_THROWS_WITH(a.view({4, 2}), doctest::Contains("(2, 3)"));
  CHECK_THROWS_AS(a.at({2, 0}), qx::Error);
  CHECK_THROWS_AS(a.at({0}), qx::Error);
  CHECK_THROWS_AS(a.slice(1, 2, 5), qx::Error);
  CHECK_THROWS_AS(a.item(), qx::Error);
  CHECK_THROWS_AS(qx::Tensor<float>::from({2, 2}, {1, 2, 3}), qx::Error);
  CHECK_THROWS_AS(a.grad(), qx::Error);
  CHECK_FALSE(qx::Tensor<float>().defined());
}

TEST_CASE("storage is 64-byte aligned") {
  auto a = qx::Tensor<float>::empty({3, 5});
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
}
