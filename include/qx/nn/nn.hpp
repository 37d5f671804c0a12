// Umbrella for the module system, the layers, the ResNets and weight files.
#pragma once
#include "qx/nn/layers.hpp"
#include "qx/nn/module.hpp"
#include "qx/nn/resnet.hpp"
#include "qx/nn/serialize.hpp"
#include "qx/nn/weight_cache.hpp"
