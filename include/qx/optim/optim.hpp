// Umbrella for the optimisers and the learning-rate schedule.
#pragma once
#include "qx/optim/adam.hpp"
#include "qx/optim/optimizer.hpp"
#include "qx/optim/sgd.hpp"
#include "qx/optim/step_lr.hpp"
