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

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
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
      gx.fill_(T(0));
      parallel_for(0, planes * this->replicas(), [&](Index p) {
        T* dst = gx.data() + p * in_plane;
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
  auto argmax = Tensor<Index>::empty(y.shape(), x.device());  // every entry is written below
  dispatch(x.device(), "max_pool2d", [&] {
    parallel_for(0, planes, [&](Index p) {
      const T* src = xc.data() + p * h * w;
      T* dst = y.data() + p * oh * ow;
      Index* arg = argmax.data() + p * oh * ow;
      // Output columns whose window lies inside the image's columns: j·stride − padding ≥ 0 and
      // j·stride − padding + kernel ≤ w. Their loop runs over the window's taps outermost and the
      // columns innermost, in the taps' scan order, with selects instead of branches: the compiler
      // vectorises it across columns, and the data-dependent branch of a per-window scan (taken about
      // half the time) no longer stalls it. The columns at the edges keep the clipped scalar scan.
      const Index j_lo = std::min(ow, (padding + stride - 1) / stride);
      const Index j_hi = std::max(j_lo, w + padding - kernel < 0 ? Index{0} : std::min(ow, (w + padding - kernel) / stride + 1));
      for (Index i = 0; i < oh; ++i) {
        // The window clipped to the image once per row: no bounds test per element, and padding (−∞)
        // never wins because every window holds at least one pixel.
        const Index r0 = std::max<Index>(0, i * stride - padding), r1 = std::min(h, i * stride - padding + kernel);
        T* out = dst + i * ow;
        Index* out_arg = arg + i * ow;
        auto scan = [&](Index j) {
          const Index c0 = std::max<Index>(0, j * stride - padding), c1 = std::min(w, j * stride - padding + kernel);
          Index best_at = r0 * w + c0;
          T best = src[best_at];
          for (Index r = r0; r < r1; ++r)
            for (Index c = c0; c < c1; ++c) {
              const T v = src[r * w + c];
              if (v > best || v != v) {  // a NaN wins, as in PyTorch
                best = v;
                best_at = r * w + c;
              }
            }
          out[j] = best;
          out_arg[j] = best_at;
        };
        for (Index j = 0; j < j_lo; ++j) scan(j);
        constexpr Index lanes = 16;  // columns per group, held in registers across the taps
        for (Index j0 = j_lo; j0 < j_hi; j0 += lanes) {
          const Index count = std::min(lanes, j_hi - j0);
          T best[lanes];
          Index best_at[lanes];
          // Lanes past `count` repeat the group's last column, so every lane reads inside the plane and
          // the lane loops keep a fixed trip count; only `count` results are stored.
          for (Index l = 0; l < lanes; ++l) {
            best_at[l] = r0 * w + (j0 + std::min(l, count - 1)) * stride - padding;
            best[l] = src[best_at[l]];
          }
          for (Index r = r0; r < r1; ++r)
            for (Index q = 0; q < kernel; ++q) {
              const Index at = r * w + j0 * stride + q - padding;  // lane l reads src[at + l·stride]
              for (Index l = 0; l < lanes; ++l) {
                const Index here = at + std::min(l, count - 1) * stride;
                const T v = src[here];
                const bool take = v > best[l] || v != v;  // a NaN wins, as in PyTorch
                best[l] = take ? v : best[l];
                best_at[l] = take ? here : best_at[l];
              }
            }
          std::copy_n(best, count, out + j0);
          std::copy_n(best_at, count, out_arg + j0);
        }
        for (Index j = j_hi; j < ow; ++j) scan(j);
      }
    }, oh * ow * kernel * kernel, 4096);
  }, [&] {
    backends::cuda::launch_on_device(
        backends::cuda::MaxPoolForward<T>{xc.data(), y.data(), argmax.data(), {planes, h, w, oh, ow}, kernel, stride, padding});
  });
  if (!autograd::any_requires_grad<T>({&x})) return y;
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
