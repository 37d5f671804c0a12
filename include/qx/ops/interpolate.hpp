// Bilinear resize of (N, C, H, W) to (N, C, oh, ow), align_corners = False (PyTorch):
//   source coordinate  s = max((d + ½)·(in/out) − ½, 0),  i0 = ⌊s⌋, i1 = min(i0 + 1, in − 1), λ = s − i0
//   y = (1−λh)(1−λw)·x[i0,j0] + (1−λh)λw·x[i0,j1] + λh(1−λw)·x[i1,j0] + λhλw·x[i1,j1]
// Backward scatters g with the same four weights. Used to lift Grad-CAM to the input size.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/node.hpp"
#include "qx/backends/cuda/interpolate.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/kernels/functors.hpp"

#include <vector>

QX_NAMESPACE_BEGIN
namespace ops {
namespace detail {
/// The source taps of each output index along one axis (kernels::bilinear_tap, shared with CUDA).
inline std::vector<kernels::BilinearTap> bilinear_taps(Index in, Index out) {
  std::vector<kernels::BilinearTap> taps(static_cast<std::size_t>(out));
  for (Index d = 0; d < out; ++d) taps[static_cast<std::size_t>(d)] = kernels::bilinear_tap(d, in, out);
  return taps;
}

template <class T>
class InterpolateNode final : public autograd::Node<T> {
 public:
  explicit InterpolateNode(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  const char* name() const override { return "interpolate_bilinear"; }

 protected:
  std::vector<Tensor<T>> apply(const Tensor<T>& grad_output) override {
    const Tensor<T> g = grad_output.contiguous();
    const Index h = input_shape_[2], w = input_shape_[3], oh = g.size(2), ow = g.size(3);
    auto gx = Tensor<T>::empty(input_shape_, g.device());
    const Index planes = input_shape_[0] * input_shape_[1];
    dispatch(g.device(), "interpolate_bilinear", [&] {
      const auto th = bilinear_taps(h, oh), tw = bilinear_taps(w, ow);
      gx.fill_(T(0));
      parallel_for(0, planes, [&](Index p) {
        const T* src = g.data() + p * oh * ow;
        T* dst = gx.data() + p * h * w;
        for (Index i = 0; i < oh; ++i)
          for (Index j = 0; j < ow; ++j) {
            const T v = src[i * ow + j];
            const auto &a = th[i], &b = tw[j];
            dst[a.i0 * w + b.i0] += static_cast<T>(a.l0 * b.l0) * v;
            dst[a.i0 * w + b.i1] += static_cast<T>(a.l0 * b.l1) * v;
            dst[a.i1 * w + b.i0] += static_cast<T>(a.l1 * b.l0) * v;
            dst[a.i1 * w + b.i1] += static_cast<T>(a.l1 * b.l1) * v;
          }
      }, oh * ow * 4, 4096);
    }, [&] {
      backends::cuda::launch_on_device(backends::cuda::BilinearBackward<T>{g.data(), gx.data(), {planes, h, w, oh, ow}});
    });
    return {gx};
  }

 private:
  Shape input_shape_;
};
}  // namespace detail

/// Bilinear resize to (out_h, out_w), align_corners = False.
template <class T>
Tensor<T> interpolate_bilinear(const Tensor<T>& x, Index out_h, Index out_w) {
  check(x.dim() == 4, "interpolate_bilinear: input must be (N, C, H, W), got ", shape_str(x.shape()));
  check(out_h > 0 && out_w > 0 && x.size(2) > 0 && x.size(3) > 0, "interpolate_bilinear: cannot resize ",
        shape_str(x.shape()), " to (", out_h, ", ", out_w, ")");
  const Index h = x.size(2), w = x.size(3);
  const Tensor<T> xc = x.contiguous();
  auto y = Tensor<T>::empty({x.size(0), x.size(1), out_h, out_w}, x.device());
  const Index planes = x.size(0) * x.size(1);
  dispatch(x.device(), "interpolate_bilinear", [&] {
    const auto th = detail::bilinear_taps(h, out_h), tw = detail::bilinear_taps(w, out_w);
    parallel_for(0, planes, [&](Index p) {
      const T* src = xc.data() + p * h * w;
      T* dst = y.data() + p * out_h * out_w;
      for (Index i = 0; i < out_h; ++i)
        for (Index j = 0; j < out_w; ++j) {
          const auto &a = th[i], &b = tw[j];
          dst[i * out_w + j] = static_cast<T>(a.l0 * (b.l0 * src[a.i0 * w + b.i0] + b.l1 * src[a.i0 * w + b.i1]) +
                                              a.l1 * (b.l0 * src[a.i1 * w + b.i0] + b.l1 * src[a.i1 * w + b.i1]));
        }
    }, out_h * out_w * 4, 4096);
  }, [&] {
    backends::cuda::launch_on_device(backends::cuda::BilinearForward<T>{xc.data(), y.data(), {planes, h, w, out_h, out_w}});
  });
  if (!autograd::any_requires_grad<T>({&x})) return y;
  return autograd::make_result(y, {&x}, std::make_shared<detail::InterpolateNode<T>>(x.shape()));
}

}  // namespace ops
QX_NAMESPACE_END

// The float and double instances, compiled once under QX_EXTERN_TEMPLATES (qx/config.hpp).
#define QX_INSTANCES_OPS_INTERPOLATE(instance, T) \
  instance class detail::InterpolateNode<T>; \
  instance Tensor<T> interpolate_bilinear<T>(const Tensor<T>&, Index, Index);
QX_DECLARE_INSTANCES(ops, QX_INSTANCES_OPS_INTERPOLATE)
#undef QX_INSTANCES_OPS_INTERPOLATE
