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
