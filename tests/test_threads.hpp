// The thread count of qx's parallel loops for one scope, restored when it ends: tests that compare one
// thread with two, or that need a split over threads whatever the machine has.
#pragma once
#include "qx/core/parallel.hpp"

namespace qx_test {
class ThreadCount {
 public:
  explicit ThreadCount(int threads) { qx::set_num_threads(threads); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
  ~ThreadCount() { qx::set_num_threads(previous_); }

 private:
  int previous_ = qx::num_threads();
};
}  // namespace qx_test
