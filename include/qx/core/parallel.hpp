// CPU parallel loops. With QX_USE_OPENMP they run on OpenMP's thread pool; without, sequentially.
// A loop runs in parallel only when it has enough work to pay for waking the pool (`grain`).
#pragma once
#include "qx/config.hpp"
#include "qx/core/shape.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
#include <omp.h>
#endif

QX_NAMESPACE_BEGIN

/// Number of threads qx's parallel loops use.
inline int num_threads() {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads qx's parallel loops use (OpenMP's setting; ignored without OpenMP).
inline void set_num_threads(int n) {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  omp_set_num_threads(n > 0 ? n : 1);
#else
  (void)n;
#endif
}

namespace detail {
/**
 * `chunks` chunks shared among `threads` threads: thread t owns the contiguous share
 * [chunks·t/threads, chunks·(t+1)/threads), takes its chunks from the front, and once its share is empty
 * takes the others' from their back. Each share is one 64-bit word (front in the low half, back in the
 * high half) changed by compare-and-swap, so every chunk is handed out exactly once, whoever asks.
 *
 * Why not a plain static split: the two vCPUs of a shared machine often run at different speeds (up to
 * 20 % apart, not always the same one), and with fixed halves the faster thread waits at every region's
 * end. Why not schedule(dynamic): chunks handed out in turn go to either thread, so a thread reads what
 * the other wrote in the previous op — on the project's machine a core reads 1–8 MB another core has just
 * written at 29–33 GB/s, and its own at 38–56 — and the maps ran slower (docs/kernels.md, "Static shares,
 * stolen from the back"). Here a thread only leaves its share at the very end, for the chunks its partner
 * has not reached.
 */
class StealingShares {
 public:
  /// chunks < 2³²: front and back are the 32-bit halves of one word (parallel_for makes about 8 per thread).
  StealingShares(int threads, Index chunks) : shares_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      const auto front = static_cast<std::uint64_t>(chunks * t / threads);
      const auto back = static_cast<std::uint64_t>(chunks * (t + 1) / threads);
      shares_[static_cast<std::size_t>(t)].word.store(front | back << 32, std::memory_order_relaxed);
    }
  }
  int threads() const { return static_cast<int>(shares_.size()); }

  /// The next chunk at the front of thread t's share, or −1 when the share is empty.
  Index take_front(int t) { return take(t, true); }
  /// The last chunk of thread t's share (another thread helping), or −1 when the share is empty.
  Index take_back(int t) { return take(t, false); }

 private:
  Index take(int t, bool front_end) {
    // Relaxed is enough: the word only decides who runs a chunk; what the chunk writes is published by
    // the barrier at the parallel region's end.
    std::atomic<std::uint64_t>& word = shares_[static_cast<std::size_t>(t)].word;
    std::uint64_t v = word.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t front = v & 0xffffffffu, back = v >> 32;
      if (front >= back) return -1;
      const std::uint64_t next = front_end ? (front + 1) | back << 32 : front | (back - 1) << 32;
      if (word.compare_exchange_weak(v, next, std::memory_order_relaxed))
        return static_cast<Index>(front_end ? front : back - 1);
    }
  }
  struct alignas(64) Share {  // one cache line each: the owner's takes do not disturb the other shares
    std::atomic<std::uint64_t> word{0};
  };
  std::vector<Share> shares_;
};

/// Runs chunk(c) for every chunk c of `shares` on the calling thread `t`: its own share from the front,
/// then the other threads' shares from the back (the next thread's first), until all are empty.
template <class Chunk>
void run_shares(StealingShares& shares, int t, Chunk&& chunk) {
  for (Index c; (c = shares.take_front(t)) >= 0;) chunk(c);
  for (int v = 1; v < shares.threads(); ++v)
    for (Index c; (c = shares.take_back((t + v) % shares.threads())) >= 0;) chunk(c);
}
}  // namespace detail

/**
 * Calls body(i) for i in [begin, end); in parallel when (end - begin) * cost_per_item >= grain.
 * In parallel, each thread runs a contiguous share of the range, in chunks of about an eighth of a
 * share, and helps with the other shares' last chunks once its own is done (detail::StealingShares).
 * Every i is run once, by one call: a body that writes only what belongs to i gives the same bits
 * whichever thread ran it.
 */
template <class Body>
void parallel_for(Index begin, Index end, Body&& body, Index cost_per_item = 1, Index grain = 32768) {
#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
  const Index n = end - begin;
  const int threads = omp_get_max_threads();
  if (threads > 1 && n > 1 && n * cost_per_item >= grain && !omp_in_parallel()) {
    const Index chunk = std::max<Index>(1, n / (Index{8} * threads));
    detail::StealingShares shares(threads, (n + chunk - 1) / chunk);
    // A team smaller than asked for leaves shares without an owner: the others take them from the back.
#pragma omp parallel num_threads(threads)
    detail::run_shares(shares, omp_get_thread_num(), [&](Index c) {
      const Index first = begin + c * chunk, last = std::min(end, first + chunk);
      for (Index i = first; i < last; ++i) body(i);
    });
    return;
  }
#endif
  for (Index i = begin; i < end; ++i) body(i);
}

QX_NAMESPACE_END
