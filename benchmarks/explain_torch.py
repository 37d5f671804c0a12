"""PyTorch 1.13 computing the five attribution maps the usual way: three forward + backward passes with
hooks (saliency; Grad-CAM with a forward hook on layer4 and retain_grad; guided backprop with backward hooks
on every ReLU), eval mode, tuned (threads set, faster of NCHW / channels-last, warm-up, best of runs).
Prints: <config> <layout> <ms per image>.   Usage: explain_torch.py ARCH CHANNELS SIZE BATCH REPEATS [THREADS]
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def all_maps(model, x, targets):
    xs = x.clone().requires_grad_()
    model(xs).gather(1, targets[:, None]).sum().backward()
    saliency = xs.grad

    kept = {}

    def keep(_, __, out):
        out.retain_grad()
        kept["a"] = out

    h = model.layer4.register_forward_hook(keep)
    model(x.clone().requires_grad_()).gather(1, targets[:, None]).sum().backward()
    h.remove()
    a, g = kept["a"], kept["a"].grad
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    cam = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]

    hooks = [m.register_full_backward_hook(lambda m, gi, go: (gi[0].clamp(min=0),)) for m in model.modules() if isinstance(m, nn.ReLU)]
    xg = x.clone().requires_grad_()
    model(xg).gather(1, targets[:, None]).sum().backward()
    for hk in hooks:
        hk.remove()
    guided = xg.grad
    return saliency, cam, guided, guided * cam[:, None]


def main():
    arch, channels, size, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else 2)
    best = None
    for name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(num_classes=2)
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        model = model.to(memory_format=fmt).eval()
        for p in model.parameters():
            p.requires_grad_(False)  # input gradients only, as a careful user would
        x = torch.randn(batch, channels, size, size).to(memory_format=fmt)
        targets = torch.randint(0, 2, (batch,))
        all_maps(model, x, targets)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            all_maps(model, x, targets)
            times.append(time.perf_counter() - t)
        ms = min(times) * 1e3 / batch
        if best is None or ms < best[1]:
            best = (name, ms)
    print(f"{arch}_{channels}x{size}_b{batch} {best[0]} {best[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
