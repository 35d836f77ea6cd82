"""Crops of FFHQ-aligned images for recognisers and attribute models.

Generator output of FFHQ-style checkpoints (and of the demo world) is already aligned: the
eyes and mouth sit at fixed places. So the 112x112 ArcFace crop is one fixed similarity
transform, estimated once from the FFHQ 5-point layout to insightface's ArcFace template,
and the attribute crop is the square insightface's genderage model takes around a face box.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# insightface's 112x112 ArcFace template: left eye, right eye, nose, left and right mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])
# Where the same 5 points sit in an FFHQ-aligned image (fractions of its side).
FFHQ_LANDMARKS = np.array([[0.375, 0.4725], [0.625, 0.4725], [0.5, 0.61], [0.41, 0.7475], [0.59, 0.7475]])
# The face box a detector reports on an FFHQ-aligned image (x1, y1, x2, y2, fractions).
FFHQ_FACE_BOX = (0.26, 0.28, 0.74, 0.86)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points onto
    dst points (Umeyama 1991); returns the 2x3 matrix M with dst ~ M @ [x, y, 1]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        sign[-1] = -1
    R = U @ np.diag(sign) @ Vt
    scale = (S * sign).sum() / s.var(0).sum()
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def warp_affine(images: torch.Tensor, M: np.ndarray, size: int) -> torch.Tensor:
    """Resample [N, C, H, W] float images with the 2x3 pixel-space matrix M (src -> dst; or one
    matrix per image, [N, 2, 3]), like cv2.warpAffine with bilinear filtering and a zero border."""
    N, C, H, W = images.shape
    M = np.asarray(M, np.float64)
    bottom = np.broadcast_to([0.0, 0.0, 1.0], M.shape[:-2] + (1, 3))
    inv = np.linalg.inv(np.concatenate([M, bottom], -2))  # dst pixel -> src pixel
    # grid_sample works in normalised coords (-1..1, align_corners=False): pixel centre i -> (2i+1)/n - 1
    to_norm_src = np.array([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]])
    from_norm_dst = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    theta = (to_norm_src @ inv @ from_norm_dst)[..., :2, :]
    theta = torch.tensor(theta, dtype=images.dtype, device=images.device).expand(N, 2, 3)
    grid = F.affine_grid(theta, [N, C, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def arcface_matrix(image_size: int, out_size: int = 112) -> np.ndarray:
    """The fixed FFHQ -> ArcFace similarity for square images of side `image_size`."""
    return similarity_transform(FFHQ_LANDMARKS * image_size, ARCFACE_TEMPLATE * out_size / 112)


def attribute_matrix(image_size: int, out_size: int = 96, box=FFHQ_FACE_BOX) -> np.ndarray:
    """insightface's genderage crop: a square of 1.5 x the box's longer side around its centre."""
    x1, y1, x2, y2 = (np.asarray(box) * image_size).tolist()
    side = 1.5 * max(x2 - x1, y2 - y1)
    s = out_size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[s, 0, out_size / 2 - s * cx], [0, s, out_size / 2 - s * cy]])


def to_float(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] (numpy or torch) -> float32 [N, 3, H, W] in 0..255."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t[None]
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    return t.float()


def arcface_crop(images, out_size: int = 112) -> torch.Tensor:
    """FFHQ-aligned images -> float [N, 3, 112, 112] in 0..255, on the ArcFace template."""
    x = to_float(images)
    return warp_affine(x, arcface_matrix(x.shape[-1], out_size), out_size)


def arcface_crop112(images) -> np.ndarray:
    """FFHQ-aligned images -> uint8 [N, 112, 112, 3] ArcFace crops, as datasets store them."""
    return arcface_crop(images, 112).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def attribute_crop(images, out_size: int = 96, box=FFHQ_FACE_BOX) -> torch.Tensor:
    """FFHQ-aligned images -> float [N, 3, 96, 96] in 0..255, insightface's genderage crop."""
    x = to_float(images)
    return warp_affine(x, attribute_matrix(x.shape[-1], out_size, box), out_size)
