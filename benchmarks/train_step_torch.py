"""PyTorch 1.13 training step (forward + class-weighted cross-entropy + backward + Adam) for the same
configurations as qx_bench_train_step, tuned: 2 intra-op threads, the faster of NCHW and channels-last,
warm-up steps; run with OPENBLAS_NUM_THREADS=1 and the GLIBC_TUNABLES malloc setting (the C++ benchmark
does). Prints: <config> <memory_format> <ms per image> <peak RSS MiB> <minor page faults per step>.
Usage: train_step_torch.py ARCH CHANNELS SIZE BATCH STEPS [THREADS] [WIDTH]
WIDTH is the base width (torchvision's is 64; `qx reproduce` trains resnet18 of width 16).
"""
import resource
import sys
import time

import torch
import torch.nn as nn
import torchvision


def resnet(arch, channels, width):
    """torchvision's ResNet with `channels` inputs and stage widths width·(1, 2, 4, 8), as qx's make_resnet."""
    model = getattr(torchvision.models, arch)(num_classes=2)
    block = type(model.layer1[0])
    depths = [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)]
    model.inplanes = width
    model.conv1 = nn.Conv2d(channels, width, 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(block, width, depths[0])
    model.layer2 = model._make_layer(block, 2 * width, depths[1], stride=2)
    model.layer3 = model._make_layer(block, 4 * width, depths[2], stride=2)
    model.layer4 = model._make_layer(block, 8 * width, depths[3], stride=2)
    model.fc = nn.Linear(8 * width * block.expansion, 2)
    return model


def main():
    arch, channels, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    threads = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    width = int(sys.argv[7]) if len(sys.argv) > 7 else 64
    torch.set_num_threads(threads)
    best = None
    for fmt_name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        torch.manual_seed(0)
        model = resnet(arch, channels, width).to(memory_format=fmt).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=0.1)
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 8.0]))
        x = torch.randn(batch, channels, size, size).to(memory_format=fmt)
        y = torch.randint(0, 2, (batch,))

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
        ms = min(times) * 1e3 / batch
        if best is None or ms < best[1]:
            best = (fmt_name, ms, faults)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name = arch if width == 64 else f"{arch}w{width}"
    print(f"{name}_{channels}x{size}_b{batch} {best[0]} {best[1]:.3f} {rss:.0f} {best[2]:.0f}", flush=True)


if __name__ == "__main__":
    main()
