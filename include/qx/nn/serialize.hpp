// Module weights in safetensors files, by torchvision state_dict names. Loading is strict: every
// missing, unexpected and mis-shaped tensor is collected and reported in one qx::Error. F32 and F64
// files load into float and double models alike; num_batches_tracked is I64 on disk.
#pragma once
#include "qx/config.hpp"
#include "qx/io/safetensors.hpp"
#include "qx/nn/module.hpp"

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN
namespace nn {

/// Copies every tensor of `file` into `module` by name. @throws qx::Error listing all mismatches.
template <class T>
void load_state(Module<T>& module, const io::SafetensorsFile& file, bool strict = true) {
  auto state = module.named_state();
  std::set<std::string> expected;
  std::string missing, mis_shaped, unexpected;
  for (const auto& e : state) {
    expected.insert(e.name);
    if (!file.contains(e.name)) {
      missing += (missing.empty() ? "" : ", ") + e.name;
    } else if (file.shape(e.name) != e.tensor->shape() &&
               !(e.is_integer && qx::numel(file.shape(e.name)) == 1 && e.tensor->numel() == 1)) {
      mis_shaped += (mis_shaped.empty() ? "" : ", ") + e.name + " " + to_string(file.shape(e.name)) + " (model " +
                    to_string(e.tensor->shape()) + ")";
    }
  }
  for (const auto& name : file.names())
    if (!expected.count(name)) unexpected += (unexpected.empty() ? "" : ", ") + name;
  if (!mis_shaped.empty() || (strict && (!missing.empty() || !unexpected.empty()))) {
    std::string msg = "loading '" + file.path() + "' into the model failed:";
    if (!missing.empty()) msg += " missing: [" + missing + "];";
    if (!unexpected.empty()) msg += " unexpected: [" + unexpected + "];";
    if (!mis_shaped.empty()) msg += " mis-shaped: [" + mis_shaped + "];";
    msg.pop_back();
    raise_error(msg);
  }
  for (auto& e : state) {
    if (!file.contains(e.name)) continue;
    e.tensor->copy_(file.get_as<T>(e.name));  // into the module's tensor, on whichever device it is
  }
}

/// Loads `path` into `module` (strict by default).
template <class T>
void load_safetensors(Module<T>& module, const std::filesystem::path& path, bool strict = true) {
  load_state(module, io::SafetensorsFile::open(path), strict);
}

/// What load_matching did: tensors copied, RGB filters summed into one channel, and the names skipped.
struct InitReport {
  Index loaded = 0;
  bool summed_first_conv = false;
  std::vector<std::string> skipped;  ///< model tensors left as initialised (absent, or a different shape)
};

/**
 * @brief Initialises `module` from a pretrained state (torchvision names, e.g. ImageNet ResNet50): every
 * tensor whose name and shape fit is copied; for a one-channel model, `conv1.weight` (O, 3, kh, kw) is
 * summed over its RGB filters into (O, 1, kh, kw) (a grey input x gives the response of the colour
 * input (x, x, x)); everything else, such as a 1000-class `fc`, keeps its fresh initialisation.
 */
template <class T>
InitReport load_matching(Module<T>& module, const io::SafetensorsFile& file) {
  InitReport report;
  Index weights = 0;  // loaded tensors other than batch counters, which fit any model
  for (auto& e : module.named_state()) {
    const Shape& shape = e.tensor->shape();
    if (!file.contains(e.name)) {
      report.skipped.push_back(e.name);
      continue;
    }
    const Shape stored = file.shape(e.name);
    if (stored == shape || (e.is_integer && qx::numel(stored) == 1 && e.tensor->numel() == 1)) {
      const Tensor<T> value = file.get_as<T>(e.name);
      std::copy_n(value.data(), value.numel(), e.tensor->data());
      ++report.loaded;
      weights += !e.is_integer;
    } else if (e.name == "conv1.weight" && shape.size() == 4 && stored.size() == 4 && shape[1] == 1 && stored[1] == 3 &&
               shape[0] == stored[0] && shape[2] == stored[2] && shape[3] == stored[3]) {
      const Tensor<T> value = file.get_as<T>(e.name);  // (O, 3, kh, kw)
      const Index plane = shape[2] * shape[3];
      for (Index o = 0; o < shape[0]; ++o)
        for (Index p = 0; p < plane; ++p) {
          T sum = 0;
          for (Index c = 0; c < 3; ++c) sum += value.data()[(o * 3 + c) * plane + p];
          e.tensor->data()[o * plane + p] = sum;
        }
      report.summed_first_conv = true;
      ++report.loaded;
      ++weights;
    } else {
      report.skipped.push_back(e.name);
    }
  }
  check(weights > 0, "--init-weights '", file.path(), "': no tensor matches the model by name and shape (torchvision "
        "state_dict names expected, e.g. conv1.weight, layer1.0.conv1.weight)");
  return report;
}

/// Adds every parameter and buffer of `module` to `writer` (T as F32/F64, counters as I64).
template <class T>
void add_state(io::SafetensorsWriter& writer, Module<T>& module, const std::string& prefix = "") {
  for (auto& e : module.named_state()) {
    const std::string name = prefix + e.name;
    if (e.is_integer) {
      auto counter = Tensor<std::int64_t>::empty(e.tensor->shape());
      const Tensor<T> value = e.tensor->to(Device::cpu);
      for (Index i = 0; i < counter.numel(); ++i) counter.data()[i] = static_cast<std::int64_t>(value.flat(i));
      writer.add(name, counter);
    } else {
      writer.add(name, *e.tensor);
    }
  }
}

/// Writes `module`'s state to `path` atomically.
template <class T>
void save_safetensors(Module<T>& module, const std::filesystem::path& path,
                      const std::map<std::string, std::string>& metadata = {}) {
  io::SafetensorsWriter writer;
  add_state(writer, module);
  for (const auto& [k, v] : metadata) writer.set_metadata(k, v);
  writer.write(path);
}

}  // namespace nn
QX_NAMESPACE_END
