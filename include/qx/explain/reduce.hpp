// A map's per-pixel values as the focus metric sees them: each method's default reduction
// (docs/conventions.md): saliency max_c |·|, Grad-CAM as is, guided maps max_c max(·, 0).
#pragma once
#include "qx/config.hpp"
#include "qx/explain/attribution.hpp"
#include "qx/metrics/focus.hpp"

#include <vector>

QX_NAMESPACE_BEGIN
namespace explain {

/// Per-pixel reduced values (H·W) of sample s of a map (N, C, H, W) or (N, H, W).
template <class T>
std::vector<double> reduced_map(const Tensor<T>& map, Method method, Index s) {
  const Index c = map.dim() == 4 ? map.size(1) : 1, h = map.size(-2), w = map.size(-1);
  std::vector<double> out(static_cast<std::size_t>(h * w));
  const T* base = map.data() + s * c * h * w;
  metrics::with_default_reduction(method == Method::gradcam_raw ? "gradcam" : to_string(method), [&](auto reduce) {
    for (Index p = 0; p < h * w; ++p) out[static_cast<std::size_t>(p)] = reduce(base, c, h * w, p);
    return 0;
  });
  return out;
}

}  // namespace explain
QX_NAMESPACE_END
