"""FairFace's ResNet-34 attribute classifiers (Karkkainen & Joo), loaded without torchvision.

The released checkpoints (res34_fair_align_multi_7_20190809.pt, ..._4_...) are torchvision
ResNet-34 state dicts with an 18-way head: race logits first (7 or 4 used), then gender
(Male, Female) at 7:9 and nine age bins at 9:18. The network here uses torchvision's parameter
names so the state dict loads as is; it is read with weights_only=True, so no code runs.
Input: 224x224 RGB in [0, 1] with ImageNet normalisation, on FairFace's dlib face chip (5-point
alignment, padding 0.25), which for FFHQ-aligned images is a fixed square around the face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..align import FFHQ_FACE_BOX, to_float, warp_affine
from ..errors import SynthfaceError
from ..fileio import file_digest
from ..weights import load_torch_file, state_dict_mismatch

RACE7 = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
RACE4 = ["White", "Black", "Asian", "Indian"]
GENDER = ["Male", "Female"]
AGE = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class ResNet34(nn.Module):
    """torchvision's resnet34 layout and parameter names."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (cout, n, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def fairface_matrix(image_size: int, out_size: int = 224, padding: float = 0.25) -> np.ndarray:
    """Square crop around FFHQ's face box, widened by `padding` of its side on every side."""
    x1, y1, x2, y2 = (np.asarray(FFHQ_FACE_BOX) * image_size).tolist()
    side = max(x2 - x1, y2 - y1) * (1 + 2 * padding)
    s = out_size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[s, 0, out_size / 2 - s * cx], [0, s, out_size / 2 - s * cy]])


def load_state_dict(path) -> dict:
    # torch's weights_only unpickler (no code runs), the size check and clear messages
    sd = load_torch_file(path, "PyTorch state dict", fix=(
        "This looks like a whole model saved with torch.save(model); save its state_dict instead, where the "
        "model loads: torch.save(model.state_dict(), 'res34_fair_align_multi_7.pt'), and pass that file."))
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SynthfaceError(f"{path} does not hold a state dict")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


class FairFaceLabeller:
    """`races` = 7 or 4 selects which FairFace checkpoint this is."""

    def __init__(self, path, races: int = 7, device: str = "cpu", batch_size: int = 64):
        if races not in (7, 4):
            raise SynthfaceError("FairFace models have 7 or 4 races")
        self.path, self.races, self.batch_size = Path(path), races, batch_size
        if not self.path.is_file():
            raise SynthfaceError(f"FairFace checkpoint {self.path} does not exist")
        sd = load_state_dict(self.path)
        self.net = ResNet34(num_classes=int(sd["fc.weight"].shape[0]) if "fc.weight" in sd else 18)
        if self.net.fc.out_features < 18:
            raise SynthfaceError(f"{self.path}: the head has {self.net.fc.out_features} outputs, FairFace's has 18")
        mismatch = state_dict_mismatch(self.net.state_dict(), sd, str(self.path), "FairFace's ResNet-34")
        if mismatch:
            raise SynthfaceError(mismatch + "; pass the res34_fair_align_multi_7 / _4 checkpoint of FairFace")
        self.net.load_state_dict(sd)
        self.device = torch.device(device)
        self.net.eval().to(self.device)
        self.schema = {"race": RACE7 if races == 7 else RACE4, "gender": GENDER, "age": AGE}

    @torch.no_grad()
    def predict_proba(self, images) -> dict[str, np.ndarray]:
        outs = []
        for s in range(0, len(images), self.batch_size):
            x = to_float(images[s:s + self.batch_size])
            x = warp_affine(x, fairface_matrix(x.shape[-1]), 224) / 255.0
            x = ((x - IMAGENET_MEAN) / IMAGENET_STD).to(self.device)
            outs.append(self.net(x).float().cpu())
        z = torch.cat(outs)
        return {"race": torch.softmax(z[:, :self.races], 1).numpy(), "gender": torch.softmax(z[:, 7:9], 1).numpy(),
                "age": torch.softmax(z[:, 9:18], 1).numpy()}

    def describe(self) -> dict:
        return {"kind": f"fairface{self.races}", "path": str(self.path), "sha256": file_digest(self.path),
                "schema": self.schema}
