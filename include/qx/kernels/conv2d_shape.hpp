// The sizes of one convolution (PyTorch's floor rule for the output), shared by the CPU kernels
// (kernels/conv2d.hpp, winograd.hpp) and the CUDA kernels (backends/cuda/conv2d.hpp): QX_HOST_DEVICE.
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"

QX_NAMESPACE_BEGIN
namespace kernels {

/// The sizes of one convolution; out_h/out_w follow PyTorch's floor rule.
struct Conv2dShape {
  Index n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w;
  QX_HOST_DEVICE Index out_h() const { return (h + 2 * pad_h - kh) / stride_h + 1; }
  QX_HOST_DEVICE Index out_w() const { return (w + 2 * pad_w - kw) / stride_w + 1; }
  QX_HOST_DEVICE Index patch() const { return c_in * kh * kw; }  // K
  QX_HOST_DEVICE Index positions() const { return out_h() * out_w(); }  // P
};

}  // namespace kernels
QX_NAMESPACE_END
