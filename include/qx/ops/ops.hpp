// Umbrella for every tensor op with autograd (one op per header, forward and backward side by side).
#pragma once
#include "qx/ops/add.hpp"
#include "qx/ops/add_relu.hpp"
#include "qx/ops/batch_norm2d.hpp"
#include "qx/ops/conv2d.hpp"
#include "qx/ops/flatten.hpp"
#include "qx/ops/interpolate.hpp"
#include "qx/ops/linear.hpp"
#include "qx/ops/pooling.hpp"
#include "qx/ops/reduce.hpp"
#include "qx/ops/relu.hpp"
#include "qx/ops/softmax.hpp"
