// Element-wise steps of a moving average of tensors, on the tensors' device (train/weight_average.hpp
// averages a model's weights with them):
//   moving_average_step:  a ← d·a + (1 − d)·w
//   swap_values:          a ↔ b, element by element (storages stay where they are)
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/optim.hpp"
#include "qx/core/error.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"

#include <algorithm>

QX_NAMESPACE_BEGIN
namespace optim {

/// @throws qx::Error when the two tensors differ in size or device, or are not contiguous.
template <class T>
void moving_average_step(Tensor<T>& average, const Tensor<T>& value, double decay) {
  check(average.numel() == value.numel() && average.device() == value.device() && average.is_contiguous() &&
            value.is_contiguous(),
        "moving_average_step: average ", shape_str(average.shape()), " and value ", shape_str(value.shape()),
        " must be contiguous, of one size, on one device");
  const kernels::AverageUpdate<T> rule{static_cast<T>(decay)};
  T* a = average.data();
  const T* w = value.data();
  const Index n = average.numel();
  dispatch(average.device(), "moving_average_step", [&] { parallel_for(0, n, [&](Index i) { rule(a[i], w[i]); }); },
           [&] { backends::cuda::launch_on_device(backends::cuda::AverageStep<T>{rule, a, w, n}); });
}

/// @throws qx::Error when the two tensors differ in size or device, or are not contiguous.
template <class T>
void swap_values(Tensor<T>& a, Tensor<T>& b) {
  check(a.numel() == b.numel() && a.device() == b.device() && a.is_contiguous() && b.is_contiguous(), "swap_values: ",
        shape_str(a.shape()), " and ", shape_str(b.shape()), " must be contiguous, of one size, on one device");
  T* x = a.data();
  T* y = b.data();
  const Index n = a.numel();
  dispatch(a.device(), "swap_values", [&] { std::swap_ranges(x, x + n, y); },
           [&] { backends::cuda::launch_on_device(backends::cuda::SwapValues<T>{x, y, n}); });
}

}  // namespace optim
QX_NAMESPACE_END
