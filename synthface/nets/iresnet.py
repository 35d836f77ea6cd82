"""Improved ResNets (IResNet, Duta et al. 2020) as arcface_torch trains them for face recognition.

Parameter and buffer names and shapes are those of arcface_torch's `backbones/iresnet.py`, so a
`model.pt` its `train_v2.py` saves loads here with `load_state_dict(strict=True)` and gives the
same embeddings. Input: an aligned 112x112 RGB crop normalised as (x - 127.5) / 127.5.

Layout: a 3x3 stem at full resolution, four stages of pre-activation basic blocks
(BN -> conv -> BN -> PReLU -> strided conv -> BN, plus the shortcut) that halve the resolution
each (112 -> 7), then BN, flatten, dropout, a linear layer to the embedding and a BatchNorm1d
whose scale stays fixed at 1.
"""

from __future__ import annotations

import torch
from torch import nn

# blocks per stage for each depth
IRESNET_LAYOUTS = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
STAGE_WIDTHS = (64, 128, 256, 512)
_FINAL_SIDE = 7  # 112 / 2**4


class IBasicBlock(nn.Module):
    """Pre-activation residual block; the stride sits on the second convolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        # in place: BatchNorm's backward does not need its output, so this saves a tensor per block
        y += x if self.downsample is None else self.downsample(x)
        return y


class IResNet(nn.Module):
    """`layers`: blocks per stage, e.g. IRESNET_LAYOUTS["r50"]. `fp16` runs the convolutional
    trunk under CUDA autocast (float16) as arcface_torch does; the embedding layers stay float32."""

    def __init__(self, layers=IRESNET_LAYOUTS["r50"], embedding_dim: int = 512, dropout: float = 0.0,
                 fp16: bool = False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError("an IResNet has four stages")
        self.fp16 = fp16
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, width) in enumerate(zip(layers, STAGE_WIDTHS), 1):
            blocks = [IBasicBlock(cin, width, 2)] + [IBasicBlock(width, width, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * _FINAL_SIDE * _FINAL_SIDE, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        self._init_weights()

    def _init_weights(self):
        # arcface_torch's initialisation, so training from scratch starts from the same distribution
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        # the embedding's BN scale is not learned (arcface_torch freezes it)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x.float()))


def iresnet(arch: str, embedding_dim: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYOUTS[arch], embedding_dim=embedding_dim, dropout=dropout, fp16=fp16)
