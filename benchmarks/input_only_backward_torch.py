"""PyTorch 1.13: the same stack as qx_bench_input_only_backward (four 3×3 64→64 convolutions with ReLU at
56×56, batch 8): backward time with weight gradients, and with only the input's gradient
(torch.autograd.grad(loss, x)). Prints: <full ms> <input-only ms>.   Usage: script.py REPEATS THREADS
"""
import sys
import time

import torch
import torch.nn.functional as F

repeats, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
ws = [(torch.randn(64, 64, 3, 3) * 0.05).requires_grad_() for _ in range(4)]
x = torch.randn(8, 64, 56, 56).requires_grad_()


def run(input_only):
    best = float("inf")
    for _ in range(repeats + 1):
        h = x
        for w in ws:
            h = F.relu(F.conv2d(h, w, None, 1, 1))
        loss = h.sum()
        t = time.perf_counter()
        if input_only:
            torch.autograd.grad(loss, [x])
        else:
            loss.backward()
        best = min(best, time.perf_counter() - t)
        x.grad = None
        for w in ws:
            w.grad = None
    return best * 1e3


print(f"{run(False):.1f} {run(True):.1f}")
