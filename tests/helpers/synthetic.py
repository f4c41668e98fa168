"""A small synthetic backdoor task for behaviour tests: K smooth class prototypes plus
noise, a 3x3 white patch in the bottom-right corner relabelled to class 0."""

import torch
import torch.nn as nn
import torch.nn.functional as F

K, H = 5, 16
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _protos():
    g = torch.Generator().manual_seed(0)
    return F.interpolate(torch.rand(K, 3, 4, 4, generator=g) * 2 - 1, size=(H, H), mode="bilinear", align_corners=False)


def make(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    x = (0.5 + 0.3 * _protos()[y] + 0.15 * torch.randn(n, 3, H, H, generator=g)).clamp(0, 1)
    return x, y


def trigger(x01):
    x01 = x01.clone()
    x01[:, :, -3:, -3:] = 1.0
    return x01


def normalize(x01):
    return (x01 - 0.5) / 0.25


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, K),
    )


def backdoored_task(n_train=1200, n_poison=120, epochs=3, seed=0):
    """Returns (backdoored model, clean subset (x, y), clean test (x, y), poisoned test (x, y_bd, y_orig)),
    all images normalised."""
    torch.manual_seed(seed)
    xtr, ytr = make(n_train, 1)
    idx = torch.nonzero(ytr != 0).squeeze(1)[:n_poison]
    xtr[idx] = trigger(xtr[idx])
    ytr = ytr.clone()
    ytr[idx] = 0
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(normalize(xtr[b])), ytr[b]).backward()
            opt.step()
    model.eval()
    xte, yte = make(500, 2)
    xcl, ycl = make(200, 3)
    keep = yte != 0  # the target class is excluded from the poisoned test set
    poisoned = (normalize(trigger(xte[keep])), torch.zeros(int(keep.sum()), dtype=torch.long), yte[keep])
    return model, (normalize(xcl), ycl), (normalize(xte), yte), poisoned
