// Element-wise arithmetic shared by the CPU loops and the CUDA kernels (QX_HOST_DEVICE), so the CPU
// tests cover the very bodies a GPU build runs. Semantics follow PyTorch (docs/conventions.md).
#pragma once
#include "qx/config.hpp"

#include <array>
#include <cmath>

#include "qx/core/shape.hpp"

#if !defined(__CUDACC__) && (defined(__AVX512F__) || defined(__AVX__))
#include <immintrin.h>
#endif

QX_NAMESPACE_BEGIN
namespace kernels {

/// relu(x) = max(x, 0); NaN propagates, as in PyTorch (so a diverged network is noticed).
struct Relu {
  template <class T>
  QX_HOST_DEVICE T operator()(T x) const {
    return x < T(0) ? T(0) : x;
  }
};

/// ∂relu: g·[y > 0], with y the ReLU's output (y > 0 ⇔ x > 0).
struct ReluGrad {
  template <class T>
  QX_HOST_DEVICE T operator()(T g, T y) const {
    return y > T(0) ? g : T(0);
  }
};

/// Guided-backprop ReLU rule (Springenberg et al. 2015): g·[x > 0]·[g > 0].
struct GuidedReluGrad {
  template <class T>
  QX_HOST_DEVICE T operator()(T g, T y) const {
    return (y > T(0) && g > T(0)) ? g : T(0);
  }
};

/**
 * What a convolution's forward does to each biased output v = Σ w·x + b before storing it:
 *   y[i] = act(v + residual[i]),   act = relu when `relu`, else the identity; residual optional,
 * indexed like y. A frozen ResNet's "conv → add shortcut → relu" is then one store instead of three
 * passes over the feature map; the graph keeps its separate add and relu nodes (ops::Conv2dEpilogue).
 */
template <class T>
struct ConvOutputStage {
  const T* residual = nullptr;
  bool relu = false;
  bool active() const { return residual != nullptr || relu; }
  QX_HOST_DEVICE T operator()(T biased, Index at) const {
    const T v = residual ? biased + residual[at] : biased;
    return relu ? Relu{}(v) : v;
  }
};

/// Batch-norm affine normalisation: y = γ·(x − μ)·σ⁻¹ + β, with inv_std = 1/√(var + eps).
struct BatchNormNormalize {
  template <class T>
  QX_HOST_DEVICE T operator()(T x, T mean, T inv_std, T gamma, T beta) const {
    return gamma * (x - mean) * inv_std + beta;
  }
};

/**
 * Σ_{b<planes} Σ_{k<plane} term(b, k) for Sums sums at once (term returns std::array<T, Sums>) — one
 * channel's planes, one per image. Each plane is accumulated in 16 independent lanes of T, then summed
 * in double: the lanes let the compiler vectorise a float reduction without reassociating (no
 * -ffast-math), and each lane sums only plane/16 terms, so a feature map keeps nearly double's accuracy.
 * Several sums share one pass over memory. step(b, k) runs before the group of 16 terms at k: the
 * caller's hook for software prefetch (kernels::detail::ChannelAhead). A whole channel in one call rather
 * than a lane_sums call per plane: batch norm's backward on 8×8 planes took half the time
 * (docs/kernels.md).
 */
template <class T, int Sums, class Term, class Step>
QX_HOST_DEVICE std::array<double, Sums> plane_lane_sums(long planes, long plane, Term term, Step step) {
  constexpr int lanes = 16;
  std::array<double, Sums> sums{};
  for (long b = 0; b < planes; ++b) {
    T acc[Sums][lanes] = {};
    long k = 0;
    for (; k + lanes <= plane; k += lanes) {
      step(b, k);
      for (int l = 0; l < lanes; ++l) {
        const std::array<T, Sums> v = term(b, k + l);
        for (int q = 0; q < Sums; ++q) acc[q][l] += v[q];
      }
    }
    for (; k < plane; ++k) {
      const std::array<T, Sums> v = term(b, k);
      for (int q = 0; q < Sums; ++q) sums[q] += static_cast<double>(v[q]);
    }
    for (int q = 0; q < Sums; ++q)
      for (int l = 0; l < lanes; ++l) sums[q] += static_cast<double>(acc[q][l]);
  }
  return sums;
}

/// Σ_{k<n} term(k) for Sums sums at once (term returns std::array<T, Sums>): plane_lane_sums of one plane.
template <class T, int Sums, class Term>
QX_HOST_DEVICE std::array<double, Sums> lane_sums(long n, Term term) {
  return plane_lane_sums<T, Sums>(1, n, [term](long, long k) { return term(k); }, [](long, long) {});
}

/// Σ_{k<n} term(k) (term returns T), as lane_sums.
template <class T, class Term>
QX_HOST_DEVICE double lane_sum(long n, Term term) {
  return lane_sums<T, 1>(n, [term](long k) { return std::array<T, 1>{static_cast<T>(term(k))}; })[0];
}

/// The two source taps of output index d along one axis of a bilinear resize, align_corners = False:
///   s = max((d + ½)·(in/out) − ½, 0),  i0 = ⌊s⌋,  i1 = min(i0 + 1, in − 1),  weights (1 − (s − i0), s − i0).
struct BilinearTap {
  Index i0, i1;
  double l0, l1;  // weights of i0 and i1
};
QX_HOST_DEVICE inline BilinearTap bilinear_tap(Index d, Index in, Index out) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double s = (static_cast<double>(d) + 0.5) * scale - 0.5;
  if (s < 0) s = 0;
  const Index i0 = static_cast<Index>(s);
  const Index i1 = i0 + (i0 < in - 1 ? 1 : 0);
  const double l1 = s - static_cast<double>(i0);
  return {i0, i1, 1.0 - l1, l1};
}

/// Output cell i of an adaptive pool of `out` cells over `in` inputs covers [⌊i·in/out⌋, ⌈(i+1)·in/out⌉).
QX_HOST_DEVICE inline Index adaptive_start(Index i, Index out, Index in) { return (i * in) / out; }
QX_HOST_DEVICE inline Index adaptive_end(Index i, Index out, Index in) { return ((i + 1) * in + out - 1) / out; }

/// One row of log_softmax: y_k = x_k − (m + log Σ_j exp(x_j − m)), m = max_j x_j (the sum in double).
template <class T>
QX_HOST_DEVICE void log_softmax_row(const T* x, T* y, Index k) {
  T m = x[0];
  for (Index c = 1; c < k; ++c) m = x[c] > m ? x[c] : m;
  double s = 0;
  for (Index c = 0; c < k; ++c) s += std::exp(static_cast<double>(x[c] - m));
  const T lse = m + static_cast<T>(std::log(s));
  for (Index c = 0; c < k; ++c) y[c] = x[c] - lse;
}

/// √x of a scalar.
template <class T>
QX_HOST_DEVICE T square_root(T x) {
  return std::sqrt(x);
}

#if !defined(__CUDACC__)
/// Values per LaneVector: one AVX-512 vector of floats.
inline constexpr int lanes = 16;

/// `lanes` values of T as a GCC/Clang vector (host code only): element-wise arithmetic on it is vector
/// arithmetic whatever the surrounding code. Plain arrays T[16] let GCC replace small, fully unrolled
/// arrays by scalars (measured in the Winograd filter transform: 3,574 scalar and 57 vector instructions,
/// 4.6–5.7 % of a resnet18 training step); Adam's host loop and the Winograd transforms use it.
template <class T>
struct LaneVectorOf {
  typedef T type __attribute__((vector_size(sizeof(T) * lanes)));
};
template <class T>
using LaneVector = typename LaneVectorOf<T>::type;

/// √x of 16 floats as vector square roots. std::sqrt never vectorises under the default -fmath-errno
/// (it may set errno), so an optimiser's loop calling it stays scalar; the results are the same,
/// correctly rounded square roots.
inline LaneVector<float> square_root(LaneVector<float> x) {
#if defined(__AVX512F__)
  return (LaneVector<float>)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  __m256 half[2];
  __builtin_memcpy(half, &x, sizeof x);
  half[0] = _mm256_sqrt_ps(half[0]);
  half[1] = _mm256_sqrt_ps(half[1]);
  __builtin_memcpy(&x, half, sizeof x);
  return x;
#else
  for (int i = 0; i < 16; ++i) x[i] = std::sqrt(x[i]);
  return x;
#endif
}
#endif

/// One element of an Adam / AdamW step (optim/adam.hpp has the formulas); w, m, v are updated in place.
/// V is T, or on the host 16 of them as a vector (LaneVector<float>) when T is float: one body for the GPU's
/// elements and the CPU's vectors.
template <class T>
struct AdamUpdate {
  T lr, weight_decay, beta1, beta2, eps, step_size, bias2_sqrt;
  bool decoupled;
  template <class V>
  QX_HOST_DEVICE void operator()(V& w, V g, V& m, V& v) const {
    if (decoupled) w *= T(1) - lr * weight_decay;
    else g += weight_decay * w;
    m = beta1 * m + (T(1) - beta1) * g;
    v = beta2 * v + (T(1) - beta2) * g * g;
    w -= step_size * m / (square_root(v) / bias2_sqrt + eps);
  }
};

/// One element of a moving average (optim/moving_average.hpp): a ← d·a + (1 − d)·w.
template <class T>
struct AverageUpdate {
  T decay;
  QX_HOST_DEVICE void operator()(T& average, T w) const { average = decay * average + (T(1) - decay) * w; }
};

/// One element of an SGD step (optim/sgd.hpp has the formulas); b is the momentum buffer or null.
template <class T>
struct SgdUpdate {
  T lr, weight_decay, momentum, dampening;
  bool nesterov, first;
  QX_HOST_DEVICE void operator()(T& w, T g, T* b) const {
    T d = g + weight_decay * w;
    if (b) {
      *b = first ? d : momentum * *b + (T(1) - dampening) * d;
      d = nesterov ? d + momentum * *b : *b;
    }
    w -= lr * d;
  }
};

}  // namespace kernels
QX_NAMESPACE_END
