"""The demo world's small networks: recognisers and attribute classifiers.

Moved here from `synthface.world.models` so that anything able to import torch can build (and
backpropagate through) them without pulling in the world's renderer or training code. Their
parameter names are the ones the shipped ONNX files were exported from, so keep them stable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The world's label spaces (synthface.world.renderer.GROUPS / GENDERS); only their sizes matter here,
# and the nets layer must not import the world.
N_GROUPS = 3
N_GENDERS = 2


def _bn_act(c, act="prelu"):
    return [nn.BatchNorm2d(c), nn.PReLU(c) if act == "prelu" else nn.ReLU(inplace=True)]


class _Residual(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), *_bn_act(cout),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.PReLU(cout)

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


class _DepthwiseBlock(nn.Module):
    """MobileFaceNet-style inverted bottleneck."""

    def __init__(self, cin, cout, stride, expand=2):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), *_bn_act(mid),
                                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), *_bn_act(mid),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def backbone(kind: str, in_size: int) -> tuple[nn.Module, int]:
    """Feature extractor (stride 16) ending in a global depthwise convolution, as in
    MobileFaceNet, which keeps the spatial layout but not a huge flattened layer; returns it
    and its output width. `kind`: resnet | mobile | plain."""
    if kind == "resnet":
        layers = [nn.Conv2d(3, 24, 5, 2, 2, bias=False), *_bn_act(24),
                  _Residual(24, 32, 2), _Residual(32, 64, 2), _Residual(64, 128, 2)]
    elif kind == "mobile":
        layers = [nn.Conv2d(3, 24, 3, 2, 1, bias=False), *_bn_act(24),
                  _DepthwiseBlock(24, 48, 2), _DepthwiseBlock(48, 96, 2), _DepthwiseBlock(96, 128, 2),
                  _DepthwiseBlock(128, 128, 1)]
    elif kind == "plain":
        layers = [nn.Conv2d(3, 24, 3, 2, 1, bias=False), *_bn_act(24, "relu")]
        c = 24
        for w in (48, 96, 128):
            layers += [nn.Conv2d(c, w, 3, 1, 1, bias=False), *_bn_act(w, "relu"), nn.MaxPool2d(2, ceil_mode=True)]
            c = w
    else:
        raise ValueError(f"unknown backbone {kind!r}")
    side = math.ceil(in_size / 16)
    gdc = [nn.Conv2d(128, 128, side, groups=128, bias=False), nn.BatchNorm2d(128), nn.Flatten()]
    return nn.Sequential(*layers, *gdc), 128


class Recogniser(nn.Module):
    """Face image -> identity embedding (un-normalised, as insightface expects)."""

    def __init__(self, kind="resnet", embedding=128, in_size=112):
        super().__init__()
        self.features, width = backbone(kind, in_size)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, embedding), nn.BatchNorm1d(embedding))

    def forward(self, x):
        return self.head(self.features(x))


class AttributeNet(nn.Module):
    """Face image -> group logits (3), gender logits (2) and age/100."""

    def __init__(self, kind="resnet", in_size=96, n_groups=N_GROUPS, n_genders=N_GENDERS, age=True):
        super().__init__()
        self.features, width = backbone(kind, in_size)
        self.trunk = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, 128), nn.PReLU(128))
        self.group = nn.Linear(128, n_groups)
        self.gender = nn.Linear(128, n_genders)
        # age=False: no age head (the audit classifier's ONNX never exported one, so it cannot be recovered)
        self.age = nn.Linear(128, 1) if age else None

    def forward(self, x):
        h = self.trunk(self.features(x))
        return self.group(h), self.gender(h), (self.age(h) if self.age is not None else None)


class GenderAgeHead(nn.Module):
    """insightface genderage layout: [female logit, male logit, age / 100]."""

    def __init__(self, net: AttributeNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        _, gender, age = self.net(x)
        return torch.cat([gender, age], 1)


class AttributeLogits(nn.Module):
    """One [N, 5] output: group logits then gender logits (slices named in the JSON sidecar)."""

    def __init__(self, net: AttributeNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        group, gender, _ = self.net(x)
        return torch.cat([group, gender], 1)


class AttributeOutputs(AttributeNet):
    """An AttributeNet (same parameter names) returning one tensor, as its ONNX exports do:
    output="logits" gives [group logits, gender logits] (AttributeLogits, attributes.onnx),
    output="genderage" gives [female, male, age / 100] (GenderAgeHead, genderage.onnx)."""

    OUTPUTS = ("logits", "genderage")

    def __init__(self, kind="resnet", in_size=96, output="logits", age=True, **kw):
        super().__init__(kind, in_size, age=age, **kw)
        if output not in self.OUTPUTS or (output == "genderage" and not age):
            raise ValueError(f"output must be one of {self.OUTPUTS} (genderage needs the age head)")
        self.output = output

    def forward(self, x):
        group, gender, age = super().forward(x)
        return torch.cat([group, gender] if self.output == "logits" else [gender, age], 1)
