// The training loop of the study as a reusable component (docs/training.md): seeded shuffling,
// mini-batches, class-weighted cross-entropy with weight_c = N / N_c, Adam with weight decay and
// per-group learning rates, StepLR, per-epoch validation accuracy / precision / recall / F1, the early
// stop (from epoch index ≥ 4: stop when this epoch's validation F1 ≤ the mean of the previous `window`
// epochs'), a best checkpoint (the last epoch that improved both validation accuracy and F1), and an
// exact resume: model, optimiser and schedule state and history are written atomically after every epoch
// (and, on request, every few batches and when Ctrl-C stops the run), and a resumed run continues from the
// batch where the state was written, ending with the weights an uninterrupted run would have. On request,
// an exponential moving average of the weights (train/weight_average.hpp) is what validation, the
// checkpoint and the returned model use.
#pragma once
#include "qx/config.hpp"
#include "qx/autograd/engine.hpp"
#include "qx/core/random.hpp"
#include "qx/io/atomic_file.hpp"
#include "qx/io/progress.hpp"
#include "qx/io/safetensors.hpp"
#include "qx/metrics/classification.hpp"
#include "qx/nn/layers.hpp"
#include "qx/nn/module.hpp"
#include "qx/nn/serialize.hpp"
#include "qx/nn/weight_cache.hpp"
#include "qx/ops/add.hpp"
#include "qx/ops/flatten.hpp"
#include "qx/ops/softmax.hpp"
#include "qx/optim/adam.hpp"
#include "qx/optim/step_lr.hpp"
#include "qx/train/interrupt.hpp"
#include "qx/train/weight_average.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

QX_NAMESPACE_BEGIN
namespace train {

/// What the loop needs of a dataset: its size, each sample's label, and batches by index. A training set
/// may also have `set_epoch(Index)`, which `fit` calls before each epoch (per-epoch augmentation).
template <class D, class T>
concept LabelledDataset = requires(D& d, const std::vector<Index>& idx, Tensor<T>& images, std::vector<Index>& labels, Index i) {
  { d.size() } -> std::convertible_to<Index>;
  { d.label(i) } -> std::convertible_to<Index>;
  d.template get_batch<T>(idx, images, labels);
};

/// An in-memory dataset: images (N, C, H, W) and one label per image.
template <class T>
class TensorDataset {
 public:
  TensorDataset(Tensor<T> images, std::vector<Index> labels) : images_(images.contiguous()), labels_(std::move(labels)) {
    check(images_.dim() == 4 && images_.size(0) == static_cast<Index>(labels_.size()), "TensorDataset: images ",
          shape_str(images_.shape()), " and ", labels_.size(), " labels");
  }
  Index size() const { return images_.size(0); }
  Index label(Index i) const { return labels_.at(static_cast<std::size_t>(i)); }
  template <class U>
  void get_batch(const std::vector<Index>& indices, Tensor<U>& images, std::vector<Index>& labels) const {
    const Index per = images_.numel() / images_.size(0), b = static_cast<Index>(indices.size());
    Shape shape = images_.shape();
    shape[0] = b;
    if (images.shape() != shape) images = Tensor<U>::empty(shape);
    labels.resize(indices.size());
    for (Index k = 0; k < b; ++k) {
      const Index i = indices[static_cast<std::size_t>(k)];
      check(i >= 0 && i < size(), "TensorDataset: index ", i, " out of range [0, ", size(), ")");
      for (Index p = 0; p < per; ++p) images.data()[k * per + p] = static_cast<U>(images_.data()[i * per + p]);
      labels[static_cast<std::size_t>(k)] = labels_[static_cast<std::size_t>(i)];
    }
  }

 private:
  Tensor<T> images_;
  std::vector<Index> labels_;
};

/**
 * Further labels per training sample — `tasks` of them, each of `num_classes` classes — learned by a
 * linear head on the output of one module of the model (flattened per sample) beside the model's own
 * output. With z = W_aux · flatten(layer(x)) + b_aux cut into `tasks` consecutive groups z_t of
 * num_classes scores, sample n's T rows (z_t, y_aux,t) are cross-entropy rows of their own:
 *   loss = CE_w(model(x), y) + weight · Σ_{n,t} w'_{y_aux,n,t} ℓ(z_{n,t}, y_aux,n,t) / Σ_{n,t} w'_{y_aux,n,t}
 * (ℓ = −log softmax at the label; PyTorch's weighted mean — the plain mean over samples and tasks when
 * unweighted) with class weights w' from all the auxiliary labels when `TrainOptions::class_weights`. The head is not
 * part of the model: it shapes the features the model's own classifier reads, and is dropped afterwards
 * (the training state keeps it under "auxiliary." so that a resumed run continues it). docs/training.md.
 */
struct AuxiliaryLabels {
  std::string layer;          ///< the module whose output feeds the head, e.g. "avgpool"
  std::vector<Index> labels;  ///< `tasks` per training sample (sample i's are [i·tasks, (i + 1)·tasks)), in [0, num_classes)
  double weight = 1.0;        ///< the auxiliary loss's weight (> 0)
  Index num_classes = 2;
  Index tasks = 1;            ///< labels per sample (e.g. one per other beat of an ECG window)
};

struct TrainOptions {
  Index epochs = 20;
  Index batch_size = 16;
  std::uint64_t seed = 0;
  double lr = 1e-4;            ///< learning rate of every trainable parameter when `group_lrs` is empty
  double weight_decay = 0.1;   ///< Adam's L2 term (PyTorch semantics)
  /// Parameter groups by name prefix ("layer4" matches "layer4.…"); parameters in no group stay frozen.
  std::vector<std::pair<std::string, double>> group_lrs;
  long lr_step = 4;            ///< StepLR step, in epochs
  double lr_gamma = 0.1;
  bool class_weights = true;   ///< weight_c = N / N_c over the training labels
  /// d of the exponential moving average of the weights (train/weight_average.hpp), updated after every
  /// step; validation, the checkpoint and the model `fit` returns are then the average. 0: off.
  double average_decay = 0;
  /// α of mixup (Zhang et al. 2018), 0: off. Each training batch becomes λ·x + (1 − λ)·x[π] for a
  /// permutation π of the batch and λ ~ Beta(α, α) folded to [½, 1] (the batch's own labels stay the
  /// larger part), and its loss λ·CE(y) + (1 − λ)·CE(y[π]) — the auxiliary loss likewise. The draws are
  /// a function of (seed, epoch, batch), so a resumed run mixes what an uninterrupted one did.
  double mixup = 0;
  Index num_classes = 2;
  Index positive_class = 1;    ///< the class whose precision / recall / F1 are reported (abnormal)
  bool early_stop = true;
  Index early_stop_window = 3;     ///< previous epochs averaged
  Index early_stop_min_epoch = 4;  ///< first epoch index at which the rule applies
  std::filesystem::path out_dir;   ///< checkpoint.safetensors, state.safetensors, log.csv; empty: none written
  bool resume = true;              ///< continue from out_dir/state.safetensors when it exists
  /// Also write the state after every this many batches inside an epoch (0: only at the end of an epoch),
  /// bounding the work a crash or SIGKILL can lose.
  Index state_every_batches = 0;
  /// Catch SIGINT/SIGTERM while training (train::InterruptGuard): stop at the next batch boundary, write
  /// the state, and throw train::Interrupted saying how to resume. Off by default: a library does not
  /// take over signals unless asked; the qx command turns it on.
  bool stop_on_interrupt = false;
  /// Called after every optimiser step with the 0-based epoch and batch (logging, tests).
  std::function<void(Index epoch, Index batch)> on_batch;
  bool progress = true;
  Index max_train_batches = 0;     ///< per epoch, 0: all (quick runs)
  Index max_validation = 0;        ///< validation samples, 0: all
  Device device = Device::cpu;     ///< where the model trains; batches are copied there (docs/cuda.md)
  std::optional<AuxiliaryLabels> auxiliary;  ///< an auxiliary label and head (see AuxiliaryLabels); none by default
};

struct EpochRecord {
  Index epoch = 0;
  double train_loss = 0, train_accuracy = 0;
  double val_accuracy = 0, val_precision = 0, val_recall = 0, val_f1 = 0;
  double lr = 0, seconds = 0;
  bool checkpointed = false;
};

struct TrainResult {
  std::vector<EpochRecord> history;
  Index best_epoch = -1;  ///< epoch of the kept checkpoint, −1 if none improved
  bool stopped_early = false;
  bool resumed = false;
};

namespace detail {
/// One batch's mixup: the weight λ of the batch's own samples and the partner π(i) of each sample.
struct Mixup {
  double lambda = 1;
  std::vector<Index> partner;
};

/// The targets of the samples `picked`, for targets stored `tasks` per sample (sample i's are
/// [i·tasks, (i + 1)·tasks)), in the same layout: a batch's auxiliary labels (picked: the batch's
/// samples), or a mixed batch's partner targets (picked: the partners, so that row i·tasks + t's partner
/// row is partner(i)·tasks + t; tasks = 1: the partner's own target).
inline std::vector<Index> task_targets(const std::vector<Index>& targets, const std::vector<Index>& picked, Index tasks = 1) {
  std::vector<Index> rows;
  rows.reserve(picked.size() * static_cast<std::size_t>(tasks));
  for (Index i : picked)
    for (Index t = 0; t < tasks; ++t) rows.push_back(targets[static_cast<std::size_t>(i * tasks + t)]);
  return rows;
}

/// λ ~ Beta(α, α) folded to max(λ, 1 − λ), and a uniform permutation of the batch, from an Rng seeded by
/// (seed, epoch, batch).
inline Mixup draw_mixup(double alpha, std::uint64_t seed, Index epoch, Index batch, Index size) {
  Rng rng((seed * 1000003ULL + static_cast<std::uint64_t>(epoch)) * 1000003ULL + static_cast<std::uint64_t>(batch) + 0x6d69787570ULL);
  Mixup m;
  const double lambda = rng.beta(alpha, alpha);
  m.lambda = std::max(lambda, 1 - lambda);
  m.partner.resize(static_cast<std::size_t>(size));
  std::iota(m.partner.begin(), m.partner.end(), Index{0});
  for (std::size_t i = m.partner.size(); i > 1; --i) std::swap(m.partner[i - 1], m.partner[rng.below(i)]);
  return m;
}

/// images[i] ← λ·images[i] + (1 − λ)·images[π(i)] for a host batch (N, …).
template <class T>
void mix_images(Tensor<T>& images, const Mixup& m) {
  const Index n = images.size(0), per_sample = n > 0 ? images.numel() / n : 0;
  check(static_cast<Index>(m.partner.size()) == n, "fit: mixup drawn for ", m.partner.size(), " samples, batch has ", n);
  const Tensor<T> source = images.contiguous();
  auto mixed = Tensor<T>::empty(images.shape());
  const T own = static_cast<T>(m.lambda), other = static_cast<T>(1 - m.lambda);
  for (Index i = 0; i < n; ++i) {
    const T* a = source.data() + i * per_sample;
    const T* b = source.data() + m.partner[static_cast<std::size_t>(i)] * per_sample;
    T* out = mixed.data() + i * per_sample;
    for (Index e = 0; e < per_sample; ++e) out[e] = own * a[e] + other * b[e];
  }
  images = mixed;
}

/// factor · loss, a scalar on `device`.
template <class T>
Tensor<T> scaled(const Tensor<T>& loss, double factor, Device device) {
  return ops::mul(loss, Tensor<T>::full({}, static_cast<T>(factor)).to(device));
}

inline nlohmann::json to_json(const EpochRecord& r) {
  return {{"epoch", r.epoch},           {"train_loss", r.train_loss},   {"train_accuracy", r.train_accuracy},
          {"val_accuracy", r.val_accuracy}, {"val_precision", r.val_precision}, {"val_recall", r.val_recall},
          {"val_f1", r.val_f1},         {"lr", r.lr},                   {"seconds", r.seconds},
          {"checkpointed", r.checkpointed}};
}
inline EpochRecord from_json(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.train_loss = j.at("train_loss");
  r.train_accuracy = j.at("train_accuracy");
  r.val_accuracy = j.at("val_accuracy");
  r.val_precision = j.at("val_precision");
  r.val_recall = j.at("val_recall");
  r.val_f1 = j.at("val_f1");
  r.lr = j.at("lr");
  r.seconds = j.at("seconds");
  r.checkpointed = j.at("checkpointed");
  return r;
}

inline bool in_group(const std::string& name, const std::string& prefix) {
  return name == prefix || (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 && name[prefix.size()] == '.');
}

inline void write_csv(const std::filesystem::path& path, const std::vector<EpochRecord>& history) {
  io::write_file_atomic(path, [&](std::ostream& out) {
    out << "epoch,train_loss,train_accuracy,val_accuracy,val_precision,val_recall,val_f1,lr,seconds,checkpointed\n";
    for (const auto& r : history) {
      char line[256];
      std::snprintf(line, sizeof line, "%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.3g,%.1f,%d\n", static_cast<long long>(r.epoch),
                    r.train_loss, r.train_accuracy, r.val_accuracy, r.val_precision, r.val_recall, r.val_f1, r.lr, r.seconds,
                    r.checkpointed ? 1 : 0);
      out << line;
    }
  });
}
}  // namespace detail

/// The paper's early-stop rule: at epoch index e ≥ min_epoch, stop when F1_e ≤ mean(F1_{e−window} … F1_{e−1}).
inline bool should_stop_early(const std::vector<double>& f1_history, Index window, Index min_epoch) {
  const Index e = static_cast<Index>(f1_history.size()) - 1;
  if (e < min_epoch || e < window || window <= 0) return false;
  double mean = 0;
  for (Index k = e - window; k < e; ++k) mean += f1_history[static_cast<std::size_t>(k)];
  mean /= static_cast<double>(window);
  return f1_history.back() <= mean;
}

/// Class weights weight_c = N / N_c (a class absent from the labels gets weight 0).
template <class T>
Tensor<T> class_weights(const std::vector<Index>& labels, Index num_classes) {
  std::vector<Index> counts(static_cast<std::size_t>(num_classes), 0);
  for (Index l : labels) {
    check(l >= 0 && l < num_classes, "class_weights: label ", l, " outside [0, ", num_classes, ")");
    ++counts[static_cast<std::size_t>(l)];
  }
  auto w = Tensor<T>::zeros({num_classes});
  for (Index c = 0; c < num_classes; ++c)
    if (counts[static_cast<std::size_t>(c)] > 0)
      w.data()[c] = static_cast<T>(static_cast<double>(labels.size()) / static_cast<double>(counts[static_cast<std::size_t>(c)]));
  return w;
}

/// Predicted class (argmax of the logits) of each of the first `limit` (0: all) windows of `data`, in eval mode.
template <class T, class D>
std::vector<Index> predict(nn::Module<T>& model, D& data, Index batch_size, Index limit = 0) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const nn::ScopedWeightCache<T> folded_once;  // every batch runs the same folded model
  const Index n = limit > 0 ? std::min(limit, data.size()) : data.size();
  std::vector<Index> predicted;
  Tensor<T> images;
  std::vector<Index> labels, indices;
  // The model's device: its first parameter's (a model without parameters runs on the host).
  const auto state = model.named_state();
  const Device device = state.empty() ? Device::cpu : state.front().tensor->device();
  for (Index first = 0; first < n; first += batch_size) {
    indices.clear();
    for (Index i = first; i < std::min(n, first + batch_size); ++i) indices.push_back(i);
    data.template get_batch<T>(indices, images, labels);
    const Tensor<T> logits = model(images.to(device)).to(Device::cpu);
    for (Index i = 0; i < logits.size(0); ++i) {
      Index best = 0;
      for (Index c = 1; c < logits.size(1); ++c)
        if (logits.at({i, c}) > logits.at({i, best})) best = c;
      predicted.push_back(best);
    }
  }
  model.train(was_training);
  return predicted;
}

/// Predictions (argmax) of `model` over `data` in eval mode; returns the confusion matrix.
template <class T, class D>
metrics::ConfusionMatrix evaluate(nn::Module<T>& model, D& data, Index num_classes, Index batch_size, Index limit = 0) {
  metrics::ConfusionMatrix matrix(num_classes);
  const auto predicted = predict(model, data, batch_size, limit);
  for (std::size_t i = 0; i < predicted.size(); ++i) matrix.add(data.label(static_cast<Index>(i)), predicted[i]);
  return matrix;
}

/**
 * @brief Trains `model` on `train_data`, validating on `val_data` after every epoch.
 * @throws qx::Error on a NaN/Inf loss (naming the epoch and batch) or on unreadable resume state.
 */
template <class T, class Train, class Val>
  requires LabelledDataset<Train, T> && LabelledDataset<Val, T>
TrainResult fit(nn::Module<T>& model, Train& train_data, Val& val_data, const TrainOptions& o) {
  namespace fs = std::filesystem;
  check(o.batch_size > 0 && o.epochs >= 0, "fit: batch size ", o.batch_size, " and epochs ", o.epochs, " must be positive");
  check(train_data.size() > 0, "fit: the training set is empty");
  model.to(o.device);  // before the optimiser takes its parameter handles
  // Parameter groups by name prefix; parameters in no group are frozen (no gradient computed for them).
  std::vector<optim::ParamGroup<T>> groups;
  std::vector<Tensor<T>> trainable;
  const auto named = model.named_parameters();
  if (o.group_lrs.empty()) {
    groups.push_back({model.parameters(), o.lr, o.weight_decay, "all"});
  } else {
    for (const auto& [prefix, lr] : o.group_lrs) {
      optim::ParamGroup<T> g{{}, lr, o.weight_decay, prefix};
      for (const auto& [name, p] : named)
        if (detail::in_group(name, prefix)) g.params.push_back(*p);
      check(!g.params.empty(), "fit: learning-rate group '", prefix, "' matches no parameter");
      groups.push_back(std::move(g));
    }
  }
  const bool persist = !o.out_dir.empty();
  // One training sample: its shape is kept in the state (a convolutional network accepts pictures of any
  // size, so without it a run resumed on other data — 64-px pictures, then 128 — would go on silently),
  // and its forward pass gives the auxiliary head its input width.
  Tensor<T> probe;
  Shape sample_shape;
  if (persist || o.auxiliary) {
    std::vector<Index> probe_labels;
    train_data.template get_batch<T>({0}, probe, probe_labels);
    sample_shape.assign(probe.shape().begin() + 1, probe.shape().end());
  }
  // The auxiliary head: its input width from one training sample's pass (eval mode, no graph), then a
  // parameter group of its own at the base learning rate.
  std::shared_ptr<nn::Linear<T>> aux_head;
  Tensor<T> aux_features;
  bool aux_capture = false;
  std::optional<nn::ScopedForwardHook<T>> aux_hook;
  Tensor<T> aux_weights;
  if (o.auxiliary) {
    const auto& aux = *o.auxiliary;
    check(aux.tasks >= 1, "fit: auxiliary labels need at least 1 task, got ", aux.tasks);
    check(static_cast<Index>(aux.labels.size()) == train_data.size() * aux.tasks, "fit: ", aux.labels.size(),
          " auxiliary labels for ", train_data.size(), " training samples and ", aux.tasks, " task(s)");
    check(aux.weight > 0 && std::isfinite(aux.weight), "fit: auxiliary loss weight ", aux.weight, " must be positive");
    check(aux.num_classes >= 2, "fit: auxiliary labels need at least 2 classes, got ", aux.num_classes);
    for (std::size_t i = 0; i < aux.labels.size(); ++i)
      check(aux.labels[i] >= 0 && aux.labels[i] < aux.num_classes, "fit: auxiliary label ", aux.labels[i], " of sample ",
            static_cast<Index>(i) / aux.tasks,
            aux.tasks > 1 ? " (task " + std::to_string(static_cast<Index>(i) % aux.tasks) + ")" : std::string(),
            " is outside [0, ", aux.num_classes, ")");
    aux_hook.emplace(model.submodule(aux.layer), [&](nn::Module<T>&, const Tensor<T>&, Tensor<T>& out) {
      if (aux_capture) aux_features = out;
    });
    {
      NoGradGuard no_grad;
      const bool was_training = model.is_training();
      model.eval();
      aux_capture = true;
      model(probe.to(o.device));
      aux_capture = false;
      model.train(was_training);
    }
    check(aux_features.defined() && aux_features.dim() >= 1 && aux_features.size(0) == 1, "fit: auxiliary layer '", aux.layer,
          "' did not run in the model's forward pass with a batch of one");
    Rng aux_rng(o.seed * 1000003ULL + 0x61757869ULL);
    aux_head = std::make_shared<nn::Linear<T>>(aux_features.numel(), aux.num_classes * aux.tasks, aux_rng);
    aux_head->to(o.device);
    aux_features = {};
    groups.push_back({aux_head->parameters(), o.lr, o.weight_decay, "auxiliary"});
    if (o.class_weights) aux_weights = class_weights<T>(aux.labels, aux.num_classes).to(o.device);
  }
  for (const auto& g : groups) trainable.insert(trainable.end(), g.params.begin(), g.params.end());
  optim::Adam<T> optimizer(groups);
  optim::StepLR<T> schedule(optimizer, o.lr_step, o.lr_gamma);
  check(o.average_decay == 0 || (o.average_decay > 0 && o.average_decay < 1), "fit: average decay ", o.average_decay,
        " outside (0, 1) (0 turns the weight average off)");
  check(o.mixup >= 0 && std::isfinite(o.mixup), "fit: mixup alpha ", o.mixup, " must be positive (0 turns mixup off)");
  std::optional<WeightAverage<T>> average;
  if (o.average_decay > 0) average.emplace(model, o.average_decay);
  // The model fit returns: the average when there is one (what validation measured).
  auto finish = [&](TrainResult r) {
    if (average) average->swap();
    return r;
  };

  std::vector<Index> all_labels(static_cast<std::size_t>(train_data.size()));
  for (Index i = 0; i < train_data.size(); ++i) all_labels[static_cast<std::size_t>(i)] = train_data.label(i);
  const Tensor<T> weights = o.class_weights ? class_weights<T>(all_labels, o.num_classes).to(o.device) : Tensor<T>();

  TrainResult result;
  double best_accuracy = -1, best_f1 = -1;
  Index start_epoch = 0, start_batch = 0, start_seen = 0, start_correct = 0;
  double start_loss_sum = 0, start_seconds = 0;
  if (persist) fs::create_directories(o.out_dir);
  const fs::path state_path = o.out_dir / "state.safetensors";
  if (persist && o.resume && fs::exists(state_path)) {
    const auto state = io::SafetensorsFile::open(state_path);
    // Checked before anything of the state reaches the model, so a refused resume leaves it as it was.
    const auto meta = nlohmann::json::parse(state.metadata().at("trainer"));
    if (meta.contains("sample_shape")) {  // states written before the field existed have none
      const auto written = meta.at("sample_shape").get<Shape>();
      check(written == sample_shape, "fit: '", state_path.string(), "' was written training on samples of shape ",
            shape_str(written), " and this run's are ", shape_str(sample_shape),
            ": resume with the same data, or start in an empty output folder");
    }
    io::SafetensorsWriter model_part, aux_part;
    std::map<std::string, Tensor<T>> optimizer_state, average_state;
    bool has_aux = false;
    for (const auto& name : state.names()) {
      if (name.rfind("model.", 0) == 0) {
        model_part.add_raw(name.substr(6), state.dtype(name), state.shape(name), state.bytes(name));
      } else if (name.rfind("auxiliary.", 0) == 0) {
        aux_part.add_raw(name.substr(10), state.dtype(name), state.shape(name), state.bytes(name));
        has_aux = true;
      } else if (name.rfind("optim.", 0) == 0) {
        optimizer_state[name.substr(6)] = state.get_as<T>(name);
      } else if (name.rfind("average.", 0) == 0) {
        average_state[name.substr(8)] = state.get_as<T>(name);
      }
    }
    check(average_state.empty() == !average, "fit: '", state_path.string(), "' was written ",
          average ? "without" : "with", " a weight average, and this run has ", average ? "one" : "none",
          ": resume with the same average decay, or start in an empty output folder");
    if (average) average->load_state_dict(average_state);
    check(has_aux == static_cast<bool>(aux_head), "fit: '", state_path.string(), "' was written ",
          aux_head ? "without" : "with", " an auxiliary head, and this run has ", aux_head ? "one" : "none",
          ": resume with the same auxiliary labels, or start in an empty output folder");
    auto load_part = [&](nn::Module<T>& module, const io::SafetensorsWriter& part) {
      const std::string blob = part.serialize();
      std::vector<std::byte> raw(blob.size());
      std::memcpy(raw.data(), blob.data(), blob.size());
      nn::load_state(module, io::SafetensorsFile::from_bytes(std::move(raw), state_path.string()));
    };
    load_part(model, model_part);
    if (aux_head) load_part(*aux_head, aux_part);
    optimizer.load_state_dict(optimizer_state);
    for (const auto& r : meta.at("history")) result.history.push_back(detail::from_json(r));
    start_epoch = meta.at("next_epoch");
    if (meta.contains("partial")) {  // written inside an epoch: continue with its next batch
      const auto& partial = meta.at("partial");
      start_batch = partial.at("next_batch");
      start_loss_sum = partial.at("loss_sum");
      start_seen = partial.at("seen");
      start_correct = partial.at("correct");
      start_seconds = partial.at("seconds");
    }
    best_accuracy = meta.at("best_accuracy");
    best_f1 = meta.at("best_f1");
    result.best_epoch = meta.at("best_epoch");
    result.stopped_early = meta.at("stopped_early");
    result.resumed = true;
    schedule.set_epoch(start_epoch);
    if (result.stopped_early) return finish(result);
  }

  std::vector<double> f1_history;
  for (const auto& r : result.history) f1_history.push_back(r.val_f1);
  // The state after `next_batch` batches of `epoch` (next_batch = 0: the epoch is complete), atomically.
  struct Partial {
    Index next_batch;
    double loss_sum;
    Index seen, correct;
    double seconds;
  };
  auto write_state = [&](Index next_epoch, const std::optional<Partial>& partial) {
    io::SafetensorsWriter state;
    nn::add_state(state, model, "model.");
    if (aux_head) nn::add_state(state, *aux_head, "auxiliary.");
    for (const auto& [name, t] : optimizer.state_dict()) state.add("optim." + name, t);
    if (average)
      for (const auto& [name, t] : average->state_dict()) state.add("average." + name, t);
    nlohmann::json meta = {{"next_epoch", next_epoch},   {"best_accuracy", best_accuracy},
                           {"best_f1", best_f1},       {"best_epoch", result.best_epoch},
                           {"stopped_early", result.stopped_early}, {"history", nlohmann::json::array()},
                           {"sample_shape", sample_shape}};
    if (partial)
      meta["partial"] = {{"next_batch", partial->next_batch}, {"loss_sum", partial->loss_sum}, {"seen", partial->seen},
                         {"correct", partial->correct},       {"seconds", partial->seconds}};
    for (const auto& r : result.history) meta["history"].push_back(detail::to_json(r));
    state.set_metadata("trainer", meta.dump());
    state.write(state_path);
  };
  std::optional<InterruptGuard> interrupt;
  if (o.stop_on_interrupt) interrupt.emplace();
  // Called where the state on disk is current (a batch boundary whose state was just written, or an
  // epoch's end): a caught signal ends training there, saying where it stopped.
  auto stop_if_interrupted = [&](const std::string& where) {
    if (!interrupt || interrupt->caught() == 0) return;
    raise_interrupted(qx::detail::concat("interrupted by ", interrupt->caught() == SIGINT ? "SIGINT" : "SIGTERM", " at ", where,
                                         persist ? "; the training state is saved in '" + state_path.string() +
                                                       "': run the same command again to resume from there"
                                                 : std::string("; nothing was saved (no output folder)")));
  };
  Tensor<T> images;
  std::vector<Index> labels;
  for (Index epoch = start_epoch; epoch < o.epochs; ++epoch) {
    const bool continuing = epoch == start_epoch && start_batch > 0;
    const auto started = std::chrono::steady_clock::now();
    const double earlier_seconds = continuing ? start_seconds : 0;
    auto seconds_so_far = [&] {
      return earlier_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    };
    model.train();
    // A dataset with per-epoch randomness (ecg::AugmentedDataset) is told the epoch rather than keeping a
    // count of its own, so that a resumed run draws what an uninterrupted one did.
    if constexpr (requires { train_data.set_epoch(epoch); }) train_data.set_epoch(epoch);
    // Seeded per epoch, so a resumed run draws the same order as an uninterrupted one.
    std::vector<Index> order(static_cast<std::size_t>(train_data.size()));
    std::iota(order.begin(), order.end(), Index{0});
    Rng rng(o.seed * 1000003ULL + static_cast<std::uint64_t>(epoch));
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    Index batches = (train_data.size() + o.batch_size - 1) / o.batch_size;
    if (o.max_train_batches > 0) batches = std::min(batches, o.max_train_batches);
    io::ProgressBar bar("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs), batches * o.batch_size);
    double loss_sum = continuing ? start_loss_sum : 0;
    Index seen = continuing ? start_seen : 0, correct = continuing ? start_correct : 0;
    for (Index b = continuing ? start_batch : 0; b < batches; ++b) {
      const auto first = order.begin() + b * o.batch_size;
      const auto last = order.begin() + std::min<Index>((b + 1) * o.batch_size, train_data.size());
      const std::vector<Index> indices(first, last);
      train_data.template get_batch<T>(indices, images, labels);
      const std::optional<detail::Mixup> mix =
          o.mixup > 0 ? std::optional(detail::draw_mixup(o.mixup, o.seed, epoch, b, static_cast<Index>(indices.size())))
                      : std::nullopt;
      if (mix) detail::mix_images(images, *mix);
      aux_capture = static_cast<bool>(aux_head);
      const Tensor<T> logits = model(images.to(o.device));
      aux_capture = false;
      // CE(y), or under mixup λ·CE(y) + (1 − λ)·CE(y[π]).
      auto mixed_loss = [&](const Tensor<T>& scores, const std::vector<Index>& targets, const Tensor<T>& class_weights,
                            Index tasks = 1) {
        const Tensor<T> own = ops::cross_entropy(scores, targets, class_weights);
        if (!mix) return own;
        const auto partners = detail::task_targets(targets, mix->partner, tasks);
        return ops::add(detail::scaled(own, mix->lambda, o.device),
                        detail::scaled(ops::cross_entropy(scores, partners, class_weights), 1 - mix->lambda, o.device));
      };
      Tensor<T> loss = mixed_loss(logits, labels, weights);
      if (aux_head) {
        check(aux_features.defined(), "fit: auxiliary layer '", o.auxiliary->layer, "' did not run in the training forward pass");
        // The head's (batch, T·C) scores as (batch·T, C) rows, sample by sample: one cross-entropy's batch
        // mean is then the mean over samples and tasks; a mixed pair's partner row is task t of the partner.
        const Index tasks = o.auxiliary->tasks, rows = static_cast<Index>(indices.size()) * tasks;
        const std::vector<Index> aux_labels = detail::task_targets(o.auxiliary->labels, indices, tasks);
        const Tensor<T> scores = ops::reshape((*aux_head)(ops::flatten(aux_features)), Shape{rows, o.auxiliary->num_classes});
        const Tensor<T> aux_loss = mixed_loss(scores, aux_labels, aux_weights, tasks);
        loss = ops::add(loss, detail::scaled(aux_loss, o.auxiliary->weight, o.device));
        aux_features = {};
      }
      const double value = static_cast<double>(loss.item());
      check(std::isfinite(value), "training diverged: loss is ", value, " at epoch ", epoch + 1, ", batch ", b + 1, " of ",
            batches, " (lower the learning rate, or check the inputs for NaN/Inf)");
      autograd::BackwardOptions<T> walk;
      walk.inputs = trainable;
      autograd::backward(loss, {}, walk);
      optimizer.step();
      optimizer.zero_grad();
      if (average) average->update();
      loss_sum += value * static_cast<double>(indices.size());
      seen += static_cast<Index>(indices.size());
      const Tensor<T> scores = logits.to(Device::cpu);  // N·K values
      for (Index i = 0; i < scores.size(0); ++i) {
        Index best = 0;
        for (Index c = 1; c < scores.size(1); ++c)
          if (scores.at({i, c}) > scores.at({i, best})) best = c;
        correct += best == labels[static_cast<std::size_t>(i)];
      }
      if (o.progress) {
        char extra[96];
        std::snprintf(extra, sizeof extra, "loss %.4f", loss_sum / static_cast<double>(seen));
        bar.update(seen, extra);
      }
      const bool more = b + 1 < batches;
      const Partial here{b + 1, loss_sum, seen, correct, seconds_so_far()};
      if (persist && more && o.state_every_batches > 0 && (b + 1) % o.state_every_batches == 0) write_state(epoch, here);
      if (o.on_batch) o.on_batch(epoch, b);
      if (interrupt && interrupt->caught() != 0 && more) {
        if (o.progress) bar.finish();
        if (persist) write_state(epoch, here);
        stop_if_interrupted(qx::detail::concat("epoch ", epoch + 1, "/", o.epochs, ", batch ", b + 1, "/", batches));
      }
    }
    if (o.progress) bar.finish();
    EpochRecord record;
    record.epoch = epoch;
    record.lr = optimizer.lr(0);
    record.train_loss = loss_sum / static_cast<double>(std::max<Index>(1, seen));
    record.train_accuracy = static_cast<double>(correct) / static_cast<double>(std::max<Index>(1, seen));
    schedule.step();
    if (average) average->swap();  // validate and keep the average; swapped back below
    const auto matrix = evaluate(model, val_data, o.num_classes, std::max<Index>(o.batch_size, 32), o.max_validation);
    record.val_accuracy = matrix.accuracy();
    record.val_precision = matrix.precision(o.positive_class);
    record.val_recall = matrix.recall(o.positive_class);
    record.val_f1 = matrix.f1(o.positive_class);
    if (record.val_accuracy > best_accuracy && record.val_f1 > best_f1) {
      best_accuracy = record.val_accuracy;
      best_f1 = record.val_f1;
      result.best_epoch = epoch;
      record.checkpointed = true;
      if (persist) nn::save_safetensors(model, o.out_dir / "checkpoint.safetensors", {{"epoch", std::to_string(epoch)}});
    }
    if (average) average->swap();
    record.seconds = seconds_so_far();
    result.history.push_back(record);
    f1_history.push_back(record.val_f1);
    if (o.progress)
      std::fprintf(stderr, "epoch %lld: train loss %.4f acc %.4f | val acc %.4f precision %.4f recall %.4f F1 %.4f%s\n",
                   static_cast<long long>(epoch + 1), record.train_loss, record.train_accuracy, record.val_accuracy,
                   record.val_precision, record.val_recall, record.val_f1, record.checkpointed ? "  (checkpoint)" : "");
    result.stopped_early = o.early_stop && should_stop_early(f1_history, o.early_stop_window, o.early_stop_min_epoch);
    if (persist) {
      detail::write_csv(o.out_dir / "log.csv", result.history);
      write_state(epoch + 1, std::nullopt);
    }
    // A signal caught during the last batch or the validation stops here, not silently after training.
    if (!result.stopped_early && epoch + 1 < o.epochs)
      stop_if_interrupted(qx::detail::concat("the end of epoch ", epoch + 1, "/", o.epochs));
    if (result.stopped_early) {
      if (o.progress)
        std::fprintf(stderr, "early stop: validation F1 %.4f is not above the mean of the previous %lld epochs\n", record.val_f1,
                     static_cast<long long>(o.early_stop_window));
      break;
    }
  }
  return finish(result);
}

}  // namespace train
QX_NAMESPACE_END
