// qx — quantified explainability. The host umbrella header: everything but the command line and CUDA.
// Layers, lowest first: core → autograd, kernels → ops → nn → optim, train, explain; metrics and io
// stand on core; ecg on core and io (docs/architecture.md).
#pragma once
#include "qx/config.hpp"
#include "qx/core/tensor.hpp"
#include "qx/core/parallel.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/autograd/gradcheck.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/ops/ops.hpp"
