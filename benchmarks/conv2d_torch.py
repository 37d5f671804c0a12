"""PyTorch 1.13 (oneDNN) on the same convolutions as qx_bench_conv2d, tuned as a careful user would:
intra-op threads set explicitly, the faster of NCHW and channels-last, warm-up, best of several runs.
Run with OPENBLAS_NUM_THREADS=1 and GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
(qx_bench_conv2d does). Prints one line per (shape, pass, threads): name pass threads milliseconds.
"""
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [  # name, C_in, C_out, H, kernel, stride, padding
    ("stem7x7s2_3to64_224", 3, 64, 224, 7, 2, 3),
    ("3x3_64to64_56", 64, 64, 56, 3, 1, 1),
    ("3x3_128to128_28", 128, 128, 28, 3, 1, 1),
    ("3x3_256to256_14", 256, 256, 14, 3, 1, 1),
    ("3x3_512to512_7", 512, 512, 7, 3, 1, 1),
    # qx_bench_conv2d --narrow: the main job's resnet18 of width 16 on 1x64x64
    ("stem7x7s2_1to16_64", 1, 16, 64, 7, 2, 3),
    ("3x3_16to16_16", 16, 16, 16, 3, 1, 1),
    ("3x3s2_16to32_16", 16, 32, 16, 3, 2, 1),
    ("3x3s2_32to64_8", 32, 64, 8, 3, 2, 1),
    ("3x3_64to64_4", 64, 64, 4, 3, 1, 1),
    ("3x3s2_64to128_4", 64, 128, 4, 3, 2, 1),
    ("3x3_128to128_2", 128, 128, 2, 3, 1, 1),
    ("1x1s2_64to128_4", 64, 128, 4, 1, 2, 0),
    # qx_bench_conv2d --resnet18: resnet18 with a 1-channel stem on 1x128x128
    ("stem7x7s2_1to64_128", 1, 64, 128, 7, 2, 3),
    ("3x3_64to64_32", 64, 64, 32, 3, 1, 1),
    ("3x3s2_64to128_32", 64, 128, 32, 3, 2, 1),
    ("1x1s2_64to128_32", 64, 128, 32, 1, 2, 0),
    ("3x3_128to128_16", 128, 128, 16, 3, 1, 1),
    ("3x3s2_128to256_16", 128, 256, 16, 3, 2, 1),
    ("1x1s2_128to256_16", 128, 256, 16, 1, 2, 0),
    ("3x3_256to256_8", 256, 256, 8, 3, 1, 1),
    ("3x3s2_256to512_8", 256, 512, 8, 3, 2, 1),
    ("1x1s2_256to512_8", 256, 512, 8, 1, 2, 0),
    ("3x3_512to512_4", 512, 512, 4, 3, 1, 1),
    # qx_bench_conv2d --resnet50: resnet50 on 3x224x224 (with the wide shapes above)
    ("1x1_64to64_56", 64, 64, 56, 1, 1, 0),
    ("1x1_64to256_56", 64, 256, 56, 1, 1, 0),
    ("1x1_256to64_56", 256, 64, 56, 1, 1, 0),
    ("1x1_256to128_56", 256, 128, 56, 1, 1, 0),
    ("3x3s2_128to128_56", 128, 128, 56, 3, 2, 1),
    ("1x1_128to512_28", 128, 512, 28, 1, 1, 0),
    ("1x1s2_256to512_56", 256, 512, 56, 1, 2, 0),
    ("1x1_512to128_28", 512, 128, 28, 1, 1, 0),
    ("1x1_512to256_28", 512, 256, 28, 1, 1, 0),
    ("3x3s2_256to256_28", 256, 256, 28, 3, 2, 1),
    ("1x1_256to1024_14", 256, 1024, 14, 1, 1, 0),
    ("1x1s2_512to1024_28", 512, 1024, 28, 1, 2, 0),
    ("1x1_1024to256_14", 1024, 256, 14, 1, 1, 0),
    ("1x1_1024to512_14", 1024, 512, 14, 1, 1, 0),
    ("3x3s2_512to512_14", 512, 512, 14, 3, 2, 1),
    ("1x1_512to2048_7", 512, 2048, 7, 1, 1, 0),
    ("1x1s2_1024to2048_14", 1024, 2048, 14, 1, 2, 0),
    ("1x1_2048to512_7", 2048, 512, 7, 1, 1, 0),
]


def best_ms(fn, repeats):
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main():
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    only = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, cin, cout, h, k, s, p in SHAPES:
            if only and name not in only:
                continue
            results = {}
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(batch, cin, h, h).to(memory_format=fmt).requires_grad_()
                w = torch.randn(cout, cin, k, k).to(memory_format=fmt).requires_grad_()
                with torch.no_grad():
                    y = F.conv2d(x, w, None, s, p)
                g = torch.randn_like(y)

                def forward():
                    with torch.no_grad():
                        F.conv2d(x, w, None, s, p)

                def backward_input():
                    torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])

                def backward_weight():
                    torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, [False, True, False])

                for pass_name, fn in (("forward", forward), ("backward_input", backward_input), ("backward_weight", backward_weight)):
                    ms = best_ms(fn, repeats)
                    results[pass_name] = min(results.get(pass_name, float("inf")), ms)
            for pass_name, ms in results.items():
                print(f"{name} {pass_name} {threads} {ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
