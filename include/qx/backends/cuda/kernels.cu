// The one CUDA translation unit of qx: the generic __global__ function that runs any kernel struct of
// backends/cuda/ over a grid-stride loop, and launch_on_device instantiated for every kernel in float and
// double. Built by nvcc into the qx_cuda library when QX_USE_CUDA is ON (CMakeLists.txt); everything else
// in qx stays headers compiled by the host compiler (docs/cuda.md).
#include "qx/backends/cuda/batch_norm2d.hpp"
#include "qx/backends/cuda/conv2d.hpp"
#include "qx/backends/cuda/elementwise.hpp"
#include "qx/backends/cuda/interpolate.hpp"
#include "qx/backends/cuda/launch.hpp"
#include "qx/backends/cuda/linear.hpp"
#include "qx/backends/cuda/optim.hpp"
#include "qx/backends/cuda/pooling.hpp"
#include "qx/backends/cuda/softmax.hpp"
#include "qx/core/cuda.hpp"

#include <cuda_runtime.h>

QX_NAMESPACE_BEGIN
namespace backends::cuda {
namespace detail {
template <class Kernel>
__global__ void run(Kernel kernel, Index n, LaunchShape shape) {
  run_grid_stride(kernel, n, blockIdx.x, threadIdx.x, shape);
}
}  // namespace detail

template <class Kernel>
void launch_on_device(const Kernel& kernel) {
  const Index n = kernel.size();
  if (n == 0) return;
  const LaunchShape shape = launch_shape(n);
  detail::run<<<shape.grid, shape.block, 0, qx::cuda::stream()>>>(kernel, n, shape);
  QX_CUDA_CHECK(cudaGetLastError());
}

#define QX_CUDA_KERNEL(K)                                  \
  template void launch_on_device<K<float>>(const K<float>&); \
  template void launch_on_device<K<double>>(const K<double>&);
QX_CUDA_KERNEL(Fill)
QX_CUDA_KERNEL(ReluForward)
QX_CUDA_KERNEL(ReluBackward)
QX_CUDA_KERNEL(AddForward)
QX_CUDA_KERNEL(BatchNormPartialSums)
QX_CUDA_KERNEL(BatchNormStatistics)
QX_CUDA_KERNEL(BatchNormForward)
QX_CUDA_KERNEL(BatchNormBackwardPartialSums)
QX_CUDA_KERNEL(BatchNormBackwardReduce)
QX_CUDA_KERNEL(BatchNormBackwardInput)
QX_CUDA_KERNEL(Im2col)
QX_CUDA_KERNEL(Col2im)
QX_CUDA_KERNEL(FinishConvOutput)
QX_CUDA_KERNEL(ChannelSums)
QX_CUDA_KERNEL(MaxPoolForward)
QX_CUDA_KERNEL(MaxPoolBackward)
QX_CUDA_KERNEL(AdaptiveAvgPoolForward)
QX_CUDA_KERNEL(AdaptiveAvgPoolBackward)
QX_CUDA_KERNEL(BilinearForward)
QX_CUDA_KERNEL(BilinearBackward)
QX_CUDA_KERNEL(LogSoftmaxForward)
QX_CUDA_KERNEL(LogSoftmaxBackward)
QX_CUDA_KERNEL(CrossEntropyForward)
QX_CUDA_KERNEL(CrossEntropyBackward)
QX_CUDA_KERNEL(BroadcastRows)
QX_CUDA_KERNEL(ColumnSums)
QX_CUDA_KERNEL(AdamStep)
QX_CUDA_KERNEL(SgdStep)
QX_CUDA_KERNEL(AverageStep)
QX_CUDA_KERNEL(SwapValues)
#undef QX_CUDA_KERNEL

}  // namespace backends::cuda
QX_NAMESPACE_END
