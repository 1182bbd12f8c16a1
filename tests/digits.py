"""A small CNN trained on real images: scikit-learn's 8x8 handwritten digits (1797 labelled
images shipped inside the package, a test-only dependency).

It is compressed the way gsdeploy's inputs are: whole filters of one conv set to exact zero
(zero groups, removed by deployment) and a factorized 3x3 -> 1x1 pair. Used by the tests and
by benchmarks/digits_accuracy.py, so the table in results/ comes from the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

SHAPE = (1, 8, 8)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.reduce = nn.Conv2d(32, 8, 3, padding=1)  # the factorized pair: k x k to a low rank ...
        self.expand = nn.Conv2d(8, 32, 1)  # ... then 1 x 1 back up
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.expand(self.reduce(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 8, 8) in [0, 1], int64 labels; a fixed
    stratified-by-shuffle split of 1297 / 500 images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1297], y[:1297], x[1297:], y[1297:]


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, masks: dict | None = None) -> None:
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for p, m in masks.items():
                        p.mul_(m)
    model.eval()


def train_digits_cnn(seed: int = 0, epochs: int = 8, zero_fraction: float = 0.25) -> DigitsCNN:
    """Train, zero the `zero_fraction` weakest filters of conv2 (weights and bias), fine-tune with
    them held at zero: a model whose zero groups deployment removes without changing outputs."""
    torch.manual_seed(seed)
    x, y, _, _ = load_digits_split(seed)
    model = DigitsCNN()
    _train(model, x, y, epochs, seed)
    w = model.conv2.weight
    weakest = w.detach().flatten(1).norm(dim=1).argsort()[: int(zero_fraction * w.shape[0])]
    keep = torch.ones(w.shape[0])
    keep[weakest] = 0.0
    masks = {model.conv2.weight: keep[:, None, None, None], model.conv2.bias: keep}
    with torch.no_grad():
        for p, m in masks.items():
            p.mul_(m)
    _train(model, x, y, max(2, epochs // 4), seed + 1, masks)
    return model


def save_program(model: nn.Module, path: Path) -> Path:
    """The model as a .pt2 (torch.export.save) with a dynamic batch: a file `gsdeploy export` reads."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.eval(), (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def top1(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float(100.0 * (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
