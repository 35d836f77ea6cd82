"""What the CID sweep (cid.py) and its identity evaluation (cid_identity.py) share: rendering people's
images, turning them into model input (and its mirror images), the dataset the attribute trainer
reads, and the file name each sweep model is saved under."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def render_images(world, people: dict, rows: np.ndarray, j: np.ndarray, size: int, batch: int = 128) -> np.ndarray:
    """Image j[i] of person rows[i] of `people`, rendered in batches: uint8 [N, size, size, 3]."""
    from ..world import take
    out = []
    for s in range(0, len(rows), batch):
        out.append(world.render(take(people, rows[s:s + batch]), j[s:s + batch], size))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def to_model_input(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, size, size], resized as synthface's ONNX labellers do
    (crop "none": antialiased bilinear) and normalised (x - 127.5) / 127.5."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((x - 127.5) / 127.5).contiguous()


def model_file(row: dict) -> str:
    """The file one sweep run's weights are saved to (and cid_identity reads them from)."""
    return f"{row['method']}_rho{row['rho']}_seed{row['seed']}.pt"


def mirrored(cfg, x: torch.Tensor, y, w=None) -> tuple:
    """(x, y, w) with every image's mirror image appended when cfg.mirror (the regions are
    centred, so a mirrored face shows the mirrored regions)."""
    if not cfg.mirror:
        return x, y, w
    return torch.cat([x, x.flip(-1)]), np.r_[y, y], None if w is None else np.r_[w, w]


class ImageTensors(torch.utils.data.Dataset):
    """Images (and labels, optional weights) as the items the attribute trainer reads."""

    def __init__(self, x, y, w=None):
        self.x, self.y = x, torch.as_tensor(y)
        self.w = None if w is None else torch.as_tensor(np.asarray(w, np.float32))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        item = {"image": self.x[i], "label": self.y[i]}
        if self.w is not None:
            item["weight"] = self.w[i]
        return item
