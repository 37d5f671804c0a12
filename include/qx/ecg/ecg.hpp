// Umbrella for the ECG layer: WFDB reading, beats and windows, rendering with ROIs, dataset shards,
// training-time augmentation.
#pragma once
#include "qx/ecg/augment.hpp"
#include "qx/ecg/beats.hpp"
#include "qx/ecg/dataset.hpp"
#include "qx/ecg/render.hpp"
#include "qx/ecg/wfdb.hpp"
