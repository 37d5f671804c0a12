// Pooling ops, PyTorch semantics.
//   max_pool2d: y[n,c,i,j] = max over the window at (i·s − p, j·s − p) of size k; padding counts as −∞;
//               the first maximum in scan order wins a tie; backward routes g to that argmax.
//   adaptive_avg_pool2d: output cell i averages input rows [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉) (same for columns);
//               backward spreads g/|cell| over the cell.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/pooling.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// Per-thread scratch of max_pool_plane: its row maxima and one padded row split by phase. It only grows,
/// so steady state allocates nothing.
template <class T>
struct MaxPoolScratch {
  std::vector<T> value, padded_row, phases;
  std::vector<std::int32_t> column;
  static MaxPoolScratch& of_this_thread(Index maxima, Index row) {
    thread_local MaxPoolScratch scratch;
    if (static_cast<Index>(scratch.value.size()) < maxima) {
      scratch.value.resize(static_cast<std::size_t>(maxima));
      scratch.column.resize(static_cast<std::size_t>(maxima));
    }
    if (static_cast<Index>(scratch.padded_row.size()) < row) {
      scratch.padded_row.resize(static_cast<std::size_t>(row));
      scratch.phases.resize(static_cast<std::size_t>(2 * row));  // min(stride, row) phases of ⌈row / stride⌉: < 2·row
    }
    return scratch;
  }
};

// One (H, W) plane of max_pool2d, separably. First each input row's maxima over every output column's
// window columns:   m[r, j] = max_{c ∈ window_j} x[r, c]   (with its column c*[r, j]),
// then each output row's maximum over its window rows:   y[i, j] = max_{r ∈ window_i} m[r, j].
// Both passes scan in ascending order and take a value when it is greater than the best so far or NaN,
// the rule of one row-major scan over the whole window, so they pick the same element: the first maximum
// in scan order (smallest row, then smallest column), or the last NaN. A row shared by two windows
// (stride < kernel) has its maxima computed once instead of once per window.
// Every loop runs over all output columns, reads contiguous memory and selects without branching, so
// the compiler vectorises it: the row is copied between −∞ pads and split into `stride` phases
// (phase m holds padded columns m, m + stride, …), so tap q of window j is element j + ⌊q/stride⌋ of
// phase q mod stride. Each window starts at (−∞, its first pixel inside the image): a pad never replaces
// it (−∞ is greater than nothing and not NaN), the first pixel greater than −∞ does, and a window of −∞
// pixels keeps its first one, as the clipped window of the definition requires.
// out_arg null: no argmax is tracked or written (a forward without autograd keeps none: it would be two
// thirds of the bytes the pass writes).
template <class T>
void max_pool_plane(const T* src, Index h, Index w, Index oh, Index ow, Index kernel, Index stride, Index padding, T* out,
                    Index* out_arg) {
  const Index span = w + 2 * padding, per_phase = (span + stride - 1) / stride;
  MaxPoolScratch<T>& scratch = MaxPoolScratch<T>::of_this_thread(h * ow, span);
  T* padded = scratch.padded_row.data();
  std::fill_n(padded, padding, -std::numeric_limits<T>::infinity());
  std::fill_n(padded + padding + w, padding, -std::numeric_limits<T>::infinity());
  auto row_pass = [&]<Index fixed_stride>(std::integral_constant<Index, fixed_stride>) {
    const Index step = fixed_stride > 0 ? fixed_stride : stride;  // a constant lets the compiler vectorise the split
    for (Index r = 0; r < h; ++r) {
      std::copy_n(src + r * w, w, padded + padding);
      const T* phases = padded;
      if (step > 1) {
        for (Index m = 0; m < step; ++m)
          for (Index t = 0; t < (span - m + step - 1) / step; ++t) scratch.phases[static_cast<std::size_t>(m * per_phase + t)] = padded[t * step + m];
        phases = scratch.phases.data();
      }
      T* best = scratch.value.data() + r * ow;
      std::int32_t* column = scratch.column.data() + r * ow;
      for (Index j = 0; j < ow; ++j) {
        best[j] = -std::numeric_limits<T>::infinity();
        column[j] = static_cast<std::int32_t>(std::max<Index>(0, j * step - padding));  // the window's first pixel
      }
      for (Index q = 0; q < kernel; ++q) {
        const T* tap = phases + (q % step) * per_phase + q / step;
        for (Index j = 0; j < ow; ++j) {
          const T v = tap[j];  // column j·stride − padding + q of the image
          const bool take = backends::cuda::pool_takes(v, best[j]);
          best[j] = take ? v : best[j];
          column[j] = take ? static_cast<std::int32_t>(j * step - padding + q) : column[j];
        }
      }
    }
  };
  if (stride == 2)
    row_pass(std::integral_constant<Index, 2>{});
  else if (stride == 1)
    row_pass(std::integral_constant<Index, 1>{});
  else
    row_pass(std::integral_constant<Index, 0>{});
  // The window rows of each output row; with the argmax (`with_argmax`) or values only.
  auto column_pass = [&]<bool with_argmax>(std::bool_constant<with_argmax>) {
    for (Index i = 0; i < oh; ++i) {
      const Index r0 = std::max<Index>(0, i * stride - padding), r1 = std::min(h, i * stride - padding + kernel);
      T* best = out + i * ow;
      Index* at = with_argmax ? out_arg + i * ow : nullptr;
      std::copy_n(scratch.value.data() + r0 * ow, ow, best);
      if constexpr (with_argmax)
        for (Index j = 0; j < ow; ++j) at[j] = r0 * w + scratch.column[static_cast<std::size_t>(r0 * ow + j)];
      for (Index r = r0 + 1; r < r1; ++r) {
        const T* value = scratch.value.data() + r * ow;
        const std::int32_t* column = scratch.column.data() + r * ow;
        for (Index j = 0; j < ow; ++j) {
          const bool take = backends::cuda::pool_takes(value[j], best[j]);
          best[j] = take ? value[j] : best[j];
          if constexpr (with_argmax) at[j] = take ? r * w + column[j] : at[j];
        }
      }
    }
  };
  if (out_arg)
    column_pass(std::true_type{});
  else
    column_pass(std::false_type{});
}

template <class T>
class MaxPool2dNode final : public autograd::Node<T> {
 public:
  MaxPool2dNode(Shape input_shape, Tensor<Index> argmax, Index kernel, Index stride, Index padding)
      : input_shape_(std::move(input_shape)), argmax_(std::move(argmax)), kernel_(kernel), stride_(stride), padding_(padding) {}
  const char* name() const override { return "max_pool2d"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();
    // Planes of every replica; replica r's plane p used the forward's argmax of plane p mod `planes`.
    const Index planes = input_shape_[0] * input_shape_[1], in_plane = input_shape_[2] * input_shape_[3];
    const Index out_plane = g.numel() / (planes * this->replicas());
    auto gx = Tensor<T>::empty(this->replicated(input_shape_), g.device());
    dispatch(g.device(), "max_pool2d", [&] {
      // Each plane is zeroed just before its scatter, while it is in cache, rather than in a pass of its own.
      parallel_for(0, planes * this->replicas(), [&](Index p) {
        T* dst = gx.data() + p * in_plane;
        std::fill_n(dst, in_plane, T(0));
        const T* src = g.data() + p * out_plane;
        const Index* arg = argmax_.data() + (p % planes) * out_plane;
        for (Index k = 0; k < out_plane; ++k) dst[arg[k]] += src[k];
      }, out_plane, 4096);
    }, [&] {
      const backends::cuda::PlaneMap map{planes * this->replicas(), input_shape_[2], input_shape_[3], argmax_.size(2), argmax_.size(3)};
      backends::cuda::launch_on_device(
          backends::cuda::MaxPoolBackward<T>{g.data(), argmax_.data(), gx.data(), map, planes, kernel_, stride_, padding_});
    });
    return {gx};
  }
  void release() override { argmax_ = {}; }

 private:
  Shape input_shape_;
  Tensor<Index> argmax_;  // (N, C, oh, ow): per output element, its flat index within its (H, W) input plane
  Index kernel_, stride_, padding_;
};

template <class T>
class AdaptiveAvgPool2dNode final : public autograd::Node<T> {
 public:
  explicit AdaptiveAvgPool2dNode(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  const char* name() const override { return "adaptive_avg_pool2d"; }
  bool handles_replicas() const override { return true; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override;

 private:
  Shape input_shape_;
};

template <class T>
std::vector<Tensor<T>> AdaptiveAvgPool2dNode<T>::apply(const Tensor<T>& grad_output) {
  const Tensor<T> g = grad_output.contiguous();
  const Index h = input_shape_[2], w = input_shape_[3], oh = g.size(2), ow = g.size(3);
  auto gx = Tensor<T>::empty(this->replicated(input_shape_), g.device());
  const Index planes = gx.size(0) * input_shape_[1];
  dispatch(g.device(), "adaptive_avg_pool2d", [&] {
    gx.fill_(T(0));
    parallel_for(0, planes, [&](Index p) {
      const T* src = g.data() + p * oh * ow;
      T* dst = gx.data() + p * h * w;
      for (Index i = 0; i < oh; ++i) {
        const Index r0 = kernels::adaptive_start(i, oh, h), r1 = kernels::adaptive_end(i, oh, h);
        for (Index j = 0; j < ow; ++j) {
          const Index c0 = kernels::adaptive_start(j, ow, w), c1 = kernels::adaptive_end(j, ow, w);
          const T share = src[i * ow + j] / static_cast<T>((r1 - r0) * (c1 - c0));
          for (Index r = r0; r < r1; ++r)
            for (Index c = c0; c < c1; ++c) dst[r * w + c] += share;
        }
      }
    }, h * w, 4096);
  }, [&] {
    backends::cuda::launch_on_device(backends::cuda::AdaptiveAvgPoolBackward<T>{g.data(), gx.data(), {planes, h, w, oh, ow}});
  });
  return {gx};
}
}  // namespace detail

/// Max pooling with a square kernel, stride and padding (stride 0 means stride = kernel).
template <class T>
Tensor<T> max_pool2d(const Tensor<T>& x, Index kernel, Index stride = 0, Index padding = 0) {
  if (stride == 0) stride = kernel;
  check(x.dim() == 4, "max_pool2d: input must be (N, C, H, W), got ", shape_str(x.shape()));
  check(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel, "max_pool2d: kernel ", kernel, ", stride ",
        stride, ", padding ", padding, " invalid (padding must be at most half the kernel)");
  const Index h = x.size(2), w = x.size(3);
  const Index oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1;
  check(h + 2 * padding >= kernel && w + 2 * padding >= kernel, "max_pool2d: input ", shape_str(x.shape()),
        " smaller than kernel ", kernel);
  const Tensor<T> xc = x.contiguous();
  const Index planes = x.size(0) * x.size(1);
  auto y = Tensor<T>::empty({x.size(0), x.size(1), oh, ow}, x.device());
  const bool keep_argmax = autograd::any_requires_grad<T>({&x});
  Tensor<Index> argmax;  // every entry is written below
  dispatch(x.device(), "max_pool2d", [&] {
    if (keep_argmax) argmax = Tensor<Index>::empty(y.shape());
    parallel_for(0, planes, [&](Index p) {
      detail::max_pool_plane(xc.data() + p * h * w, h, w, oh, ow, kernel, stride, padding, y.data() + p * oh * ow,
                             keep_argmax ? argmax.data() + p * oh * ow : nullptr);
    }, oh * ow * kernel * kernel, 4096);
  }, [&] {
    argmax = Tensor<Index>::empty(y.shape(), x.device());
    backends::cuda::launch_on_device(
        backends::cuda::MaxPoolForward<T>{xc.data(), y.data(), argmax.data(), {planes, h, w, oh, ow}, kernel, stride, padding});
  });
  if (!keep_argmax) return y;
  return autograd::make_result(y, {&x},
                               std::make_shared<detail::MaxPool2dNode<T>>(x.shape(), std::move(argmax), kernel, stride, padding));
}

/// Adaptive average pooling to (out_h, out_w).
template <class T>
Tensor<T> adaptive_avg_pool2d(const Tensor<T>& x, Index out_h, Index out_w) {
  check(x.dim() == 4, "adaptive_avg_pool2d: input must be (N, C, H, W), got ", shape_str(x.shape()));
  check(out_h > 0 && out_w > 0 && x.size(2) > 0 && x.size(3) > 0, "adaptive_avg_pool2d: output size (", out_h, ", ",
        out_w, ") or input ", shape_str(x.shape()), " is empty");
  const Index h = x.size(2), w = x.size(3);
  const Tensor<T> xc = x.contiguous();
  auto y = Tensor<T>::empty({x.size(0), x.size(1), out_h, out_w}, x.device());
  dispatch(x.device(), "adaptive_avg_pool2d", [&] {
    parallel_for(0, x.size(0) * x.size(1), [&](Index p) {
      const T* src = xc.data() + p * h * w;
      T* dst = y.data() + p * out_h * out_w;
      for (Index i = 0; i < out_h; ++i) {
        const Index r0 = kernels::adaptive_start(i, out_h, h), r1 = kernels::adaptive_end(i, out_h, h);
        for (Index j = 0; j < out_w; ++j) {
          const Index c0 = kernels::adaptive_start(j, out_w, w), c1 = kernels::adaptive_end(j, out_w, w);
          T s = 0;
          for (Index r = r0; r < r1; ++r)
            for (Index c = c0; c < c1; ++c) s += src[r * w + c];
          dst[i * out_w + j] = s / static_cast<T>((r1 - r0) * (c1 - c0));
        }
      }
    }, h * w, 4096);
  }, [&] {
    backends::cuda::launch_on_device(
        backends::cuda::AdaptiveAvgPoolForward<T>{xc.data(), y.data(), {x.size(0) * x.size(1), h, w, out_h, out_w}});
  });
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::AdaptiveAvgPool2dNode<T>>(x.shape()));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_POOLING(instance, T) \
  instance class detail::MaxPool2dNode<T>; \
  instance class detail::AdaptiveAvgPool2dNode<T>; \
  instance Tensor<T> max_pool2d<T>(const Tensor<T>&, Index, Index, Index); \
  instance Tensor<T> adaptive_avg_pool2d<T>(const Tensor<T>&, Index, Index);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_POOLING)
#undef QX_INSTANCES_OPS_POOLING
