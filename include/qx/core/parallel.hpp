// CPU parallel loops. With QX_USE_OPENMP they run on OpenMP's thread pool; without, sequentially.
// A loop runs in parallel only when it has enough work to pay for waking the pool (`grain`).
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"

#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#include <omp.h>
#endif

QX_NAMESPACE_BEGIN

/// Number of threads qx's parallel loops use.
inline int num_threads() {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads qx's parallel loops use (OpenMP's setting; ignored without OpenMP).
inline void set_num_threads(int n) {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  omp_set_num_threads(n > 0 ? n : 1);
#else
  (void)n;
#endif
}

/// Calls body(i) for i in [begin, end); in parallel when (end - begin) * cost_per_item >= grain.
template <class Body>
void parallel_for(Index begin, Index end, Body&& body, Index cost_per_item = 1, Index grain = 32768) {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  if ((end - begin) > 1 && (end - begin) * cost_per_item >= grain && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (Index i = begin; i < end; ++i) body(i);
    return;
  }
#endif
  for (Index i = begin; i < end; ++i) body(i);
}

QX_NAMESPACE_END
