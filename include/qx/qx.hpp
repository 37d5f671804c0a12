// qx — quantified explainability. The host umbrella header: everything but the command line and CUDA.
// Layers, lowest first: core → autograd, kernels → ops → nn → optim, train, explain; metrics and io
// stand on core; ecg on core and io (docs/architecture.md).
#pragma once
#include "qx/config.hpp"
#include "qx/core/adapt.hpp"
#include "qx/core/parallel.hpp"
#include "qx/core/tensor.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/autograd/grad_mode.hpp"
#include "qx/autograd/gradcheck.hpp"
#include "qx/ops/ops.hpp"
#include "qx/nn/nn.hpp"
#include "qx/optim/optim.hpp"
#include "qx/train/trainer.hpp"
#include "qx/metrics/classification.hpp"
#include "qx/metrics/focus.hpp"
#include "qx/explain/explain.hpp"
#include "qx/io/atomic_file.hpp"
#include "qx/io/colormap.hpp"
#include "qx/io/png.hpp"
#include "qx/io/progress.hpp"
#include "qx/io/safetensors.hpp"
#include "qx/ecg/ecg.hpp"
