"""PyTorch 1.13: max_pool2d(3, 2, 1) forward, and forward + backward of an all-ones gradient, on (N, C, S, S),
tuned (threads set, faster of NCHW / channels-last, warm-up, best of runs).
Prints: <forward ms> <forward + backward ms>.   Usage: max_pool_torch.py N C SIZE REPEATS THREADS
"""
import sys

import torch
import torch.nn.functional as F

from conv2d_torch import best_ms  # best wall time of runs after a warm-up, ms


def main():
    n, c, size, repeats, threads = (int(v) for v in sys.argv[1:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    best = None
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(n, c, size, size).to(memory_format=fmt)
        with torch.no_grad():
            forward = best_ms(lambda: F.max_pool2d(x, 3, 2, 1), repeats)
        leaf = x.detach().requires_grad_()

        def both():
            y = F.max_pool2d(leaf, 3, 2, 1)
            (g,) = torch.autograd.grad(y, [leaf], torch.ones_like(y))

        total = best_ms(both, repeats)
        if best is None or total < best[1]:
            best = (forward, total)
    print(f"{best[0]:.3f} {best[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
