// The loop the direct convolution kernels share (kernels/direct_conv3x3.hpp, kernels/direct_stem.hpp):
// each output vector is 16 consecutive outputs of one channel's plane; a register tile is 8 output
// channels × up to 3 such vectors (24 accumulators in AVX-512's 32 registers), and the filters are packed
// as [C_out / 8][C_in][tap][8] so that a tap's 8 output channels are adjacent and broadcast one by one.
// What differs between the kernels — where a vector's taps read the input — is theirs.
#pragma once
#include "qx/config.hpp"
#include "qx/core/allocator.hpp"
#include "qx/core/parallel.hpp"
#include "qx/kernels/functors.hpp"

#include <algorithm>
#include <cstring>

QX_NAMESPACE_BEGIN
namespace kernels {
namespace direct {

/// Output channels accumulated together.
inline constexpr Index channel_block = 8;
/// Output vectors accumulated together.
inline constexpr Index tile = 3;

/// filters[(((o / 8)·C_in + c)·taps + tap)·8 + o mod 8] = filter(o, c, tap), for C_out a multiple of 8.
template <class T, class Filter>
memory::Buffer<T> pack_filters(Index c_out, Index c_in, Index taps, Filter&& filter) {
  memory::Buffer<T> packed(static_cast<std::size_t>(c_out * c_in * taps));
  for (Index o = 0; o < c_out; ++o)
    for (Index c = 0; c < c_in; ++c)
      for (Index tap = 0; tap < taps; ++tap)
        packed[static_cast<std::size_t>((((o / channel_block) * c_in + c) * taps + tap) * channel_block + o % channel_block)] =
            filter(o, c, tap);
  return packed;
}

/**
 * For every image of n, block of 8 of the c_out output channels and tile of up to 3 of a plane's
 * `vectors` output vectors, in parallel, with `filters` packed by pack_filters(c_out, c_in, taps, …):
 *   place(v, at, origin)  — output vector v starts at element `at` of its plane, and its tap (0, 0) reads
 *                           element `origin` of the image's input (the kernel's own layout);
 *   accumulate(image, block_filters, origins, acc) — acc (LaneVector<T>[8][Vectors], zeroed) ← the tile's
 *                           sums, block_filters the block's [C_in][tap][8] filters;
 *   store(image, o, at, value) — writes the 16 outputs of channel o from element `at` of its plane.
 */
template <class T, class Place, class Accumulate, class Store>
void for_each_tile(Index n, Index c_in, Index c_out, Index taps, Index vectors, const T* filters, Place&& place,
                   Accumulate&& accumulate, Store&& store) {
  const Index blocks = c_out / channel_block, tiles = (vectors + tile - 1) / tile;
  const Index filters_per_block = c_in * taps * channel_block;
  parallel_for(0, n * blocks * tiles, [&](Index task) {
    const Index t = task % tiles, block = (task / tiles) % blocks, image = task / (tiles * blocks);
    const Index first = t * tile, count = std::min(tile, vectors - first);
    Index at[tile], origin[tile];
    for (Index v = 0; v < count; ++v) place(first + v, at[v], origin[v]);
    auto run = [&]<int Vectors>() {
      LaneVector<T> acc[channel_block][Vectors] = {};
      accumulate(image, filters + block * filters_per_block, static_cast<const Index*>(origin), acc);
      for (Index o = 0; o < channel_block; ++o)
        for (int v = 0; v < Vectors; ++v) store(image, block * channel_block + o, at[v], acc[o][v]);
    };
    if (count == 3) run.template operator()<3>();
    else if (count == 2) run.template operator()<2>();
    else run.template operator()<1>();
  }, filters_per_block * tile * lanes);
}

/// to[0, 16) = stage(value + add), `to` inside the output y (the stage's offsets are from y); a plain
/// vector add and store when the stage does nothing.
template <class T>
void store_staged(T* y, T* to, const LaneVector<T>& value, T add, const ConvOutputStage<T>& stage) {
  if (!stage.active()) {
    const LaneVector<T> biased = value + add;
    std::memcpy(to, &biased, sizeof(biased));
    return;
  }
  const Index offset = to - y;
  for (int l = 0; l < lanes; ++l) to[l] = stage(value[l] + add, offset + l);
}

}  // namespace direct
}  // namespace kernels
QX_NAMESPACE_END
