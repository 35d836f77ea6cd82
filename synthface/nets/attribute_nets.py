"""Small attribute-classifier networks (face image -> class logits).

The face-recognition backbones (IResNet, MobileFaceNet) work as attribute trunks too, but on a
CPU they cost tens of milliseconds per image; the demo world's attribute tasks (smile, glasses on
64x64 renders) need far less. `SmallCNN` is a plain stack of stride-2 3x3 convolutions with batch
norm, global average pooling and a linear layer: any input side, a few thousand parameters at
width 8, and fast enough to train dozens of models in an experiment on two cores.
"""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """`depth` stride-2 conv blocks of widths width, 2*width, ...; then global average pooling and
    a linear layer to `embedding` features (the trunk an attribute head sits on)."""

    def __init__(self, width: int = 16, depth: int = 3, embedding: int = 64, in_channels: int = 3):
        super().__init__()
        if width < 1 or depth < 1 or embedding < 1 or in_channels < 1:
            raise ValueError(f"SmallCNN needs positive width, depth, embedding and in_channels (got {width}, {depth}, "
                             f"{embedding}, {in_channels})")
        layers, c = [], in_channels
        for i in range(depth):
            w = width * 2 ** i
            layers += [nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, embedding)
        self.embedding = embedding

    def forward(self, x):
        return self.fc(self.features(x))
