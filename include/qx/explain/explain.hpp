// Umbrella for the explainability layer: the one-forward attribution pass, further methods, the
// randomisation sanity check and pictures.
#pragma once
#include "qx/explain/attribution.hpp"
#include "qx/explain/methods.hpp"
#include "qx/explain/picture.hpp"
#include "qx/explain/reduce.hpp"
#include "qx/explain/sanity.hpp"
