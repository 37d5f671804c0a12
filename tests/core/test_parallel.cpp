// parallel_for: every index run exactly once, whatever the thread count and range; each thread's share is
// contiguous; a thread that finishes its share takes the other shares' last chunks (StealingShares).
#include <doctest/doctest.h>

#include "../test_threads.hpp"

#include "qx/core/parallel.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using qx::Index;
using qx::detail::StealingShares;

TEST_CASE("StealingShares hands out every chunk once: the owner's from the front, a helper's from the back") {
  for (int threads = 1; threads <= 5; ++threads)
    for (Index chunks = 0; chunks <= 23; ++chunks) {
      CAPTURE(threads);
      CAPTURE(chunks);
      // Thread 0 alone runs everything (its partners never started): its own share in order, then each
      // other share from its back.
      StealingShares shares(threads, chunks);
      std::vector<Index> order;
      qx::detail::run_shares(shares, 0, [&](Index c) { order.push_back(c); });
      REQUIRE(order.size() == static_cast<std::size_t>(chunks));
      std::vector<int> seen(static_cast<std::size_t>(chunks), 0);
      for (Index c : order) ++seen[static_cast<std::size_t>(c)];
      for (int s : seen) CHECK(s == 1);
      const Index own = chunks / threads;  // thread 0's share: [0, chunks·1/threads)
      for (Index i = 0; i < own; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
      if (threads > 1 && chunks * 2 / threads > own)  // then thread 1's share, last chunk first
        CHECK(order[static_cast<std::size_t>(own)] == chunks * 2 / threads - 1);
    }
  // Owner and helper meet in the middle of one share without handing a chunk out twice.
  StealingShares shares(2, 10);  // thread 0: [0, 5), thread 1: [5, 10)
  CHECK(shares.take_front(0) == 0);
  CHECK(shares.take_back(0) == 4);
  CHECK(shares.take_front(0) == 1);
  CHECK(shares.take_back(0) == 3);
  CHECK(shares.take_front(0) == 2);
  CHECK(shares.take_back(0) == -1);
  CHECK(shares.take_front(0) == -1);
  CHECK(shares.take_front(1) == 5);
}

TEST_CASE("parallel_for runs every index exactly once on one, two and three threads") {
  for (int threads : {1, 2, 3}) {
    const qx_test::ThreadCount count(threads);
    for (Index n : {Index{2}, Index{15}, Index{16}, Index{17}, Index{1000}, Index{40001}}) {
      CAPTURE(threads);
      CAPTURE(n);
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
      qx::parallel_for(3, 3 + n, [&](Index i) { runs[static_cast<std::size_t>(i - 3)].fetch_add(1); }, 1, 1);
      int wrong = 0;
      for (auto& r : runs) wrong += r.load() != 1;
      CHECK(wrong == 0);
    }
  }
}

#if defined(QX_USE_OPENMP) && QX_USE_OPENMP
TEST_CASE("parallel_for: a thread done with its share takes the last chunks of the other's") {
  const qx_test::ThreadCount count(2);
  constexpr Index n = 64;  // thread 0 owns [0, 32), thread 1 [32, 64), in chunks of 4
  std::vector<int> ran_by(n, -1);
  std::atomic<bool> helped{false};
  qx::parallel_for(0, n, [&](Index i) {
    const int t = omp_get_thread_num();
    ran_by[static_cast<std::size_t>(i)] = t;
    if (i < n / 2 && t == 1) helped = true;
    // Thread 0 is held at its first index until thread 1 has run one of thread 0's (10 s at most, so a
    // schedule that never helps fails the check below instead of hanging).
    if (i == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!helped && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    }
  }, 1, 1);
  CHECK(helped.load());
  // Thread 1 ran all of its own share, and what it took of thread 0's is the end of it: whole chunks
  // counted from index 31 down.
  for (Index i = n / 2; i < n; ++i) CHECK(ran_by[static_cast<std::size_t>(i)] == 1);
  Index first_helped = n / 2;
  while (first_helped > 0 && ran_by[static_cast<std::size_t>(first_helped - 1)] == 1) --first_helped;
  CHECK(first_helped < n / 2);
  CHECK(first_helped % 4 == 0);
  for (Index i = 0; i < first_helped; ++i) CHECK(ran_by[static_cast<std::size_t>(i)] == 0);
}
#endif
