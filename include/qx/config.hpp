// qx configuration: version, feature macros and the ABI-tagged namespace. Included first by every header.
// The inline namespace encodes the switches that change template bodies (OpenMP, CUDA, AVX-512), so translation
// units compiled with different switches cannot silently link different definitions (ODR).
#pragma once

#define QX_VERSION_MAJOR 0
#define QX_VERSION_MINOR 1
#define QX_VERSION_PATCH 0

#if defined(__CUDACC__)
#define QX_HOST_DEVICE __host__ __device__
#else
#define QX_HOST_DEVICE
#endif

// Errors: qx throws qx::Error where exceptions exist. Compiled with -fno-exceptions (or with
// QX_NO_EXCEPTIONS defined, as nlohmann-json's JSON_NOEXCEPTION), every error goes instead to the
// handler set by qx::set_error_handler (core/error.hpp), with the same message, and the program ends.
#if defined(QX_NO_EXCEPTIONS) || !(defined(__cpp_exceptions) || defined(__EXCEPTIONS))
#define QX_EXCEPTIONS 0
#else
#define QX_EXCEPTIONS 1
#endif

#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#define QX_ABI_OMP _omp
#else
#define QX_ABI_OMP _seq
#endif
#if defined(QX_USE_CUDA) && QX_USE_CUDA
#define QX_ABI_CUDA _cuda
#else
#define QX_ABI_CUDA
#endif

// The float GEMM body depends on the instruction set (the packed kernel's AVX-512 or AVX2 micro-kernel,
// or Eigen's), so it is part of the tag too: translation units built with different -march settings
// cannot mix bodies.
#if defined(__AVX512F__)
#define QX_ABI_ISA _avx512
#elif defined(__AVX2__) && defined(__FMA__)
#define QX_ABI_ISA _avx2
#else
#define QX_ABI_ISA
#endif

#define QX_ABI_CONCAT_IMPL(a, b, c, d) a##b##c##d
#define QX_ABI_CONCAT(a, b, c, d) QX_ABI_CONCAT_IMPL(a, b, c, d)
#define QX_ABI_TAG QX_ABI_CONCAT(v0_1, QX_ABI_OMP, QX_ABI_CUDA, QX_ABI_ISA)

// Compiled instances (docs/compile-time.md). A header-only template library makes every translation
// unit instantiate and optimise the same kernels, ops, ResNets and attribution passes again: four fifths
// of a test file's compile time. With QX_EXTERN_TEMPLATES defined, the heavy headers declare their float
// and double instances `extern template`, and one library (CMake: qx::instances, or any translation unit
// that defines QX_INSTANTIATE_FLOAT and/or QX_INSTANTIATE_DOUBLE before including qx/qx.hpp) defines
// them. Without the macro nothing changes: every header stays self-sufficient.
#if defined(QX_EXTERN_TEMPLATES) || defined(QX_INSTANTIATE_FLOAT) || defined(QX_INSTANTIATE_DOUBLE)
#define QX_HAS_INSTANCES 1
#else
#define QX_HAS_INSTANCES 0
#endif
#if defined(QX_INSTANTIATE_FLOAT)
#define QX_INSTANCE_FLOAT template
#else
#define QX_INSTANCE_FLOAT extern template
#endif
#if defined(QX_INSTANTIATE_DOUBLE)
#define QX_INSTANCE_DOUBLE template
#else
#define QX_INSTANCE_DOUBLE extern template
#endif
/// In namespace qx::`space`, declare(instance, T) for T = float and double, where `instance` is `extern
/// template` or, in the translation unit that defines the instances, `template`; nothing when the
/// instances are off.
#if QX_HAS_INSTANCES
#define QX_DECLARE_INSTANCES(space, declare) \
  QX_NAMESPACE_BEGIN namespace space { declare(QX_INSTANCE_FLOAT, float) declare(QX_INSTANCE_DOUBLE, double) } QX_NAMESPACE_END
#else
#define QX_DECLARE_INSTANCES(space, declare)
#endif

#define QX_NAMESPACE_BEGIN \
  namespace qx {           \
  inline namespace QX_ABI_TAG {
#define QX_NAMESPACE_END \
  }                      \
  }
