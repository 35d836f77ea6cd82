"""MobileFaceNet (Chen et al. 2018) in arcface_torch's variant (`mbf`, and `mbf_large`).

Module names follow arcface_torch's `backbones/mobilefacenet.py` (every unit keeps its
sub-modules in a `layers` Sequential), so its saved state dicts load strictly. Input: an
aligned 112x112 RGB crop normalised as (x - 127.5) / 127.5.
"""

from __future__ import annotations

import torch
from torch import nn

# (blocks in each of the four residual stages, width multiplier)
MBF_LAYOUTS = {
    "mbf": ((1, 4, 6, 2), 2),
    "mbf_large": ((2, 8, 12, 4), 4),
}


class ConvUnit(nn.Module):
    """Conv -> BN, followed by a PReLU unless `linear`."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1, linear=False):
        super().__init__()
        parts = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if not linear:
            parts.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*parts)

    def forward(self, x):
        return self.layers(x)


class Bottleneck(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1); `mid` is the expanded width."""

    def __init__(self, cin, cout, mid, stride, residual=False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvUnit(cin, mid), ConvUnit(mid, mid, 3, stride, 1, groups=mid),
                                    ConvUnit(mid, cout, linear=True))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class Stage(nn.Module):
    """`n` residual bottlenecks at constant width."""

    def __init__(self, c, n, mid):
        super().__init__()
        self.layers = nn.Sequential(*[Bottleneck(c, c, mid, 1, residual=True) for _ in range(n)])

    def forward(self, x):
        return self.layers(x)


class GDCHead(nn.Module):
    """Global depthwise convolution over the 7x7 map, then a linear embedding and BatchNorm1d."""

    def __init__(self, embedding_dim):
        super().__init__()
        self.layers = nn.Sequential(ConvUnit(512, 512, 7, groups=512, linear=True), nn.Flatten(),
                                    nn.Linear(512, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_dim: int = 512, blocks=(1, 4, 6, 2), scale: int = 2, fp16: bool = False):
        super().__init__()
        self.fp16 = fp16
        c1, c2 = 64 * scale, 128 * scale
        first = (ConvUnit(c1, c1, 3, 1, 1, groups=64) if blocks[0] == 1 else Stage(c1, blocks[0], 128))
        self.layers = nn.ModuleList([
            ConvUnit(3, c1, 3, 2, 1),
            first,
            Bottleneck(c1, c1, 128, 2),
            Stage(c1, blocks[1], 128),
            Bottleneck(c1, c2, 256, 2),
            Stage(c2, blocks[2], 256),
            Bottleneck(c2, c2, 512, 2),
            Stage(c2, blocks[3], 256),
        ])
        self.conv_sep = ConvUnit(c2, 512)
        self.features = GDCHead(embedding_dim)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            for layer in self.layers:
                x = layer(x)
        return self.features(self.conv_sep(x.float()))


def mobilefacenet(arch: str = "mbf", embedding_dim: int = 512, fp16: bool = False) -> MobileFaceNet:
    blocks, scale = MBF_LAYOUTS[arch]
    return MobileFaceNet(embedding_dim, blocks, scale, fp16)
