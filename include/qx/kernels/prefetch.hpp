// Software prefetch of what a loop over channels reads next (docs/kernels.md, "Prefetching the next
// channel").
#pragma once
#include "qx/config.hpp"

#include <array>
#include <cstddef>
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

/**
 * Software prefetch `ahead` elements in front of a loop that walks one channel of NCHW tensors — its
 * `planes` planes of `plane` elements, `stride` elements apart, one per image — in groups of 16
 * elements, in each of Streams tensors at once (the step hook of plane_lane_sums). The hardware
 * prefetcher starts every plane over with misses: in batch norm's backward reduction over a 56×56 map,
 * 63 % of the samples sat on a load that missed. Not PrefetchAhead of the next plane: a fixed distance
 * across planes, because one 7×7 plane ahead (196 bytes) is too near to hide a miss.
 */
template <class T, int Streams>
class ChannelAhead {
 public:
  ChannelAhead(const std::array<const T*, Streams>& channel, Index stride, Index planes, Index plane, Index ahead)
      : channel_(channel), stride_(stride), planes_(plane > 0 ? planes : 0), plane_(plane),
        planes_ahead_(plane > 0 ? ahead / plane : 0), within_ahead_(plane > 0 ? ahead % plane : 0) {}

  /// Called before the group of 16 elements at (plane b, element k): prefetches the lines of the 16
  /// elements `ahead` further on, crossing into later planes and issuing nothing past the last one.
  void operator()(Index b, Index k) {
    if (k == 0) {  // a new plane: the cursor restarts from it, whatever the previous plane's tail skipped
      b_ = b + planes_ahead_;
      k_ = within_ahead_;
    }
    if (b_ >= planes_) {
      last_ = -1;
      return;
    }
    last_ = b_ * stride_ + k_;
#if defined(__GNUC__)
    for (int s = 0; s < Streams; ++s) {
      const char* at = reinterpret_cast<const char*>(channel_[static_cast<std::size_t>(s)] + b_ * stride_ + k_);
      for (std::size_t line = 0; line < 16 * sizeof(T); line += 64) __builtin_prefetch(at + line, 0, 3);
    }
#endif
    for (k_ += 16; k_ >= plane_; k_ -= plane_) ++b_;
  }
  /// Where the last call prefetched, in elements from the start of the channel (b·stride + k); −1 when
  /// it was past the last plane and issued nothing. For tests.
  Index last_prefetched() const { return last_; }

 private:
  std::array<const T*, Streams> channel_;
  Index stride_, planes_, plane_, planes_ahead_, within_ahead_;
  Index b_ = 0, k_ = 0, last_ = -1;
};

}  // namespace kernels::detail
QX_NAMESPACE_END
