// Software prefetch of what a loop over channels reads next (docs/kernels.md, "Prefetching the next
// channel").
#pragma once
#include "qx/config.hpp"

#include <cstdint>

#include "qx/core/shape.hpp"

QX_NAMESPACE_BEGIN
namespace kernels::detail {

/**
 * Brings the `bytes` bytes from `begin` into the cache a slice per step(), its lines spread evenly over
 * `steps` calls — so that a loop over channels fetches channel c + 1 while it computes channel c. Each
 * channel of an NCHW tensor is a stream of its own, which the hardware prefetcher picks up only after
 * its first misses; a strided layer's im2col, reading rows with gaps, spent most of its time waiting on
 * those loads. A prefetch never faults; a null `begin` (no next channel) issues nothing.
 */
class PrefetchAhead {
 public:
  static constexpr std::uintptr_t line_bytes = 64;

  PrefetchAhead(const void* begin, Index bytes, Index steps) : steps_(steps > 0 ? steps : 1) {
    if (!begin || bytes <= 0) return;
    const auto first = reinterpret_cast<std::uintptr_t>(begin);
    const std::uintptr_t aligned = first / line_bytes * line_bytes;
    line_ = reinterpret_cast<const char*>(aligned);
    lines_ = static_cast<Index>((first + static_cast<std::uintptr_t>(bytes) - aligned + line_bytes - 1) / line_bytes);
  }

  /// Asks for the next slice of lines: after step k, ⌊k·lines / steps⌋ of them (no division: the step
  /// runs once per row of an inner loop); after the last step every line has been asked for once, and
  /// further calls ask for nothing.
  void step() {
    for (owed_ += lines_; owed_ >= steps_ && issued_ < lines_; owed_ -= steps_, ++issued_, line_ += line_bytes) {
#if defined(__GNUC__)
      __builtin_prefetch(line_, 0, 3);
#endif
    }
  }

 private:
  const char* line_ = nullptr;
  Index steps_, lines_ = 0, issued_ = 0, owed_ = 0;  // owed_: k·lines − issued·steps after step k
};

}  // namespace kernels::detail
QX_NAMESPACE_END
