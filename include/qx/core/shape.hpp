// Shapes and strides: small vectors of int64, with the row-major (C order) stride rule
// stride[d] = Π_{e>d} shape[e] and a printer used in every error message: "(2, 3, 8, 8)".
#pragma once
#include "qx/config.hpp"
#include "qx/core/error.hpp"

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

QX_NAMESPACE_BEGIN

using Index = std::int64_t;
using Shape = std::vector<Index>;

inline Index numel(const Shape& shape) {
  Index n = 1;
  for (Index d : shape) n *= d;
  return n;
}

inline Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

inline std::string to_string(const Shape& shape) {
  std::string s = "(";
  for (std::size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

namespace detail {
struct ShapeText {
  const Shape& shape;
};
inline std::ostream& operator<<(std::ostream& out, ShapeText s) { return out << to_string(s.shape); }
}  // namespace detail

/// Wraps a shape so that it streams as "(N, C, H, W)" inside fail()/check() messages.
inline detail::ShapeText shape_str(const Shape& shape) { return {shape}; }

QX_NAMESPACE_END
