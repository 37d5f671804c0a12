// Row-major GEMM on device memory through cuBLAS: C = α·op(A)·op(B) + β·C with BLAS leading
// dimensions, the contract of kernels::gemm. cuBLAS is column-major, and a row-major matrix is its
// transpose in column-major, so C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ: the operands swap
// places, the transpose flags stay. Host code only (cuBLAS's C API), on qx's stream.
#pragma once
#include "qx/config.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/core/cuda.hpp"
#include "qx/core/error.hpp"
#include "qx/core/shape.hpp"

#include <type_traits>

#if defined(QX_USE_CUDA) && QX_USE_CUDA
#include <cublas_v2.h>
#endif

QX_NAMESPACE_BEGIN
namespace backends::cuda {

#if defined(QX_USE_CUDA) && QX_USE_CUDA
namespace detail {
/// qx::Error "<call> failed at <file>:<line>: <cuBLAS's status string>" unless `status` is success.
inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(call, " failed at ", file, ":", line, ": ", cublasGetStatusString(status));
}
}  // namespace detail
#define QX_CUBLAS_CHECK(expr) ::qx::backends::cuda::detail::check_cublas((expr), #expr, __FILE__, __LINE__)

/// The process's cuBLAS handle, bound to qx's stream; created at first use.
inline cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    qx::cuda::require("cuBLAS");
    cublasHandle_t created = nullptr;
    QX_CUBLAS_CHECK(cublasCreate(&created));
    QX_CUBLAS_CHECK(cublasSetStream(created, qx::cuda::stream()));
    return created;
  }();
  return handle;
}
#endif

/// C (m×n) = α·op(A)·op(B) + β·C, all row-major in device memory (kernels::gemm's contract).
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          T beta, T* c, Index ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuBLAS GEMM: float or double");
  if (m == 0 || n == 0) return;
#if defined(QX_USE_CUDA) && QX_USE_CUDA
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const auto mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if constexpr (std::is_same_v<T, float>)
    QX_CUBLAS_CHECK(cublasSgemm(cublas_handle(), op_b, op_a, ni, mi, ki, &alpha, b, static_cast<int>(ldb), a,
                                static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
  else
    QX_CUBLAS_CHECK(cublasDgemm(cublas_handle(), op_b, op_a, ni, mi, ki, &alpha, b, static_cast<int>(ldb), a,
                                static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
#else
  (void)trans_a, (void)trans_b, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c, (void)ldc;
  fail("cuBLAS GEMM: qx was built without CUDA (configure with -DQX_USE_CUDA=ON)");
#endif
}

/// How the device drivers (conv2d, batch norm: several kernels and GEMMs in a row) run: on the GPU by
/// default. The CPU tests pass an executor of their own — kernels through launch_on_host, the CPU GEMM,
/// host scratch — so the drivers' loops, offsets and buffer sizes are tested too (docs/cuda.md).
struct GpuExecutor {
  template <class Kernel>
  static void launch(const Kernel& kernel) {
    launch_on_device(kernel);
  }
  template <class T>
  static void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
                   T beta, T* c, Index ldc) {
    ::qx::backends::cuda::gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  template <class T>
  using Buffer = memory::DeviceBuffer<T>;
};

}  // namespace backends::cuda
QX_NAMESPACE_END
