"""A small face detector in SCRFD's output format, so insightface's `FaceAnalysis` runs on the
demo pack (it refuses a pack without a detector).

Layout insightface expects (and routes on): one input [1, 3, H, W] with dynamic H/W, nine
outputs: scores for strides 8/16/32 ([N_s, 1], sigmoid applied), box distances ([N_s, 4],
left/top/right/bottom in stride units) and 5 key points ([N_s, 10], offsets in stride units),
N_s = 2 anchors x (H/s) x (W/s), anchor point = cell top-left corner, both anchors of a cell
stored next to each other.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..align import FFHQ_FACE_BOX, FFHQ_LANDMARKS, similarity_transform
from .world import World, take

STRIDES = (8, 16, 32)
ANCHORS = 2
DETECTOR_NORM = (127.5, 128.0)


def _cbr(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinySCRFD(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16, 2), _cbr(16, 32, 2), _cbr(32, 48, 2), _cbr(48, 48, 1))  # stride 8
        self.down16 = nn.Sequential(_cbr(48, 64, 2), _cbr(64, 64, 1))
        self.down32 = nn.Sequential(_cbr(64, 96, 2), _cbr(96, 96, 1))
        self.heads = nn.ModuleList([nn.Conv2d(c, ANCHORS * (1 + 4 + 10), 1) for c in (48, 64, 96)])
        self.export_mode = False

    def raw(self, x):
        f8 = self.stem(x)
        f16 = self.down16(f8)
        f32 = self.down32(f16)
        outs = []
        for f, head in zip((f8, f16, f32), self.heads):
            o = head(f).permute(0, 2, 3, 1)  # [B, h, w, A * 15]
            B, h, w, _ = o.shape
            outs.append(o.reshape(B, h * w * ANCHORS, 15))
        return outs  # per stride: [B, N_s, 15] = score logit, 4 distances, 10 kps offsets

    def forward(self, x):
        outs = self.raw(x)
        scores = [torch.sigmoid(o[0, :, :1]) for o in outs]
        boxes = [o[0, :, 1:5] for o in outs]
        kps = [o[0, :, 5:] for o in outs]
        return (*scores, *boxes, *kps)


def face_boxes(lms: np.ndarray) -> np.ndarray:
    """Face box (x1, y1, x2, y2) implied by each face's 5 points: FFHQ_FACE_BOX carried from the
    canonical layout by the similarity that maps canonical points onto the face's."""
    corners = np.array([[FFHQ_FACE_BOX[0], FFHQ_FACE_BOX[1]], [FFHQ_FACE_BOX[2], FFHQ_FACE_BOX[1]],
                        [FFHQ_FACE_BOX[0], FFHQ_FACE_BOX[3]], [FFHQ_FACE_BOX[2], FFHQ_FACE_BOX[3]]])
    out = []
    for lm in lms:
        M = similarity_transform(FFHQ_LANDMARKS, lm)
        c = corners @ M[:, :2].T + M[:, 2]
        out.append([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()])
    return np.asarray(out)


def make_scenes(images, lms, rng, canvas=128):
    """Paste each 64 px face at a random scale and place on a noisy canvas; returns images
    [N, canvas, canvas, 3] uint8, boxes [N, 4] and points [N, 5, 2] in canvas pixels (NaN box
    for the ~10% scenes left without a face)."""
    N, S = len(images), images.shape[1]
    out = np.empty((N, canvas, canvas, 3), np.uint8)
    boxes = np.full((N, 4), np.nan)
    pts = np.full((N, 5, 2), np.nan)
    src = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    fb = face_boxes(lms)
    for i in range(N):
        bg = rng.uniform(0, 255, 3) + rng.normal(0, 12, (canvas, canvas, 3))
        out[i] = np.clip(bg, 0, 255).astype(np.uint8)
        if rng.random() < 0.1:
            continue
        side = int(rng.uniform(0.9, 1.9) * S)
        side = min(side, canvas)
        face = F.interpolate(src[i:i + 1], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        ox, oy = rng.integers(0, canvas - side + 1, 2)
        out[i, oy:oy + side, ox:ox + side] = face[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
        k = side / S
        boxes[i] = fb[i] * k + np.array([ox, oy, ox, oy])
        pts[i] = lms[i] * k + np.array([ox, oy])
    return out, boxes, pts


def targets(boxes, pts, canvas=128):
    """Per stride: positive mask [N, N_s], box distances and kps offsets in stride units."""
    res = []
    for s in STRIDES:
        h = w = canvas // s
        ax = np.stack(np.mgrid[:h, :w][::-1], -1).reshape(-1, 2).astype(np.float64) * s
        ax = np.repeat(ax, ANCHORS, axis=0)  # [N_s, 2]
        N = len(boxes)
        pos = np.zeros((N, len(ax)), bool)
        dist = np.zeros((N, len(ax), 4))
        off = np.zeros((N, len(ax), 10))
        for i in range(N):
            if np.isnan(boxes[i, 0]):
                continue
            x1, y1, x2, y2 = boxes[i]
            bw, bh = x2 - x1, y2 - y1
            size = max(bw, bh) / s
            if not 2.0 <= size < 8.0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            inside = (np.abs(ax[:, 0] - cx) < 0.3 * bw) & (np.abs(ax[:, 1] - cy) < 0.3 * bh)
            nearest = np.argmin(np.hypot(ax[:, 0] - cx, ax[:, 1] - cy))
            inside[(nearest // ANCHORS) * ANCHORS:(nearest // ANCHORS + 1) * ANCHORS] = True
            pos[i] = inside
            dist[i] = np.stack([ax[:, 0] - x1, ax[:, 1] - y1, x2 - ax[:, 0], y2 - ax[:, 1]], 1) / s
            off[i] = ((pts[i][None] - ax[:, None]) / s).reshape(len(ax), 10)
        res.append((pos, dist, off))
    return res


def render_faces(world: World, first: int, n: int, k: int):
    ident = world.identities(range(first, first + n))
    reps = take(ident, np.repeat(np.arange(n), k))
    return world.render(reps, np.tile(np.arange(k), n), size=64, return_landmarks=True)


def train_detector(world: World, first: int, n_ids: int, k: int, epochs: int, seed: int, batch: int = 64,
                   log: Callable = print) -> TinySCRFD:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, lms = render_faces(world, first, n_ids, k)
    net = TinySCRFD()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    t0, step = time.time(), 0
    net.train()
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        for b in range(len(images) // batch):
            rows = order[b * batch:(b + 1) * batch]
            scene, boxes, pts = make_scenes(images[rows], lms[rows], rng)
            x = (torch.from_numpy(scene).permute(0, 3, 1, 2).float() - DETECTOR_NORM[0]) / DETECTOR_NORM[1]
            outs = net.raw(x)
            loss = 0.0
            for o, (pos, dist, off) in zip(outs, targets(boxes, pts)):
                pos_t = torch.from_numpy(pos)
                w = torch.where(pos_t, 20.0, 1.0)
                loss = loss + F.binary_cross_entropy_with_logits(o[..., 0], pos_t.float(), weight=w)
                if pos.any():
                    loss = loss + F.smooth_l1_loss(o[..., 1:5][pos_t], torch.from_numpy(dist[pos]).float(), beta=0.1)
                    loss = loss + F.smooth_l1_loss(o[..., 5:][pos_t], torch.from_numpy(off[pos]).float(), beta=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                log(f"detector epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss.item():.3f} "
                    f"({time.time() - t0:.0f}s)")
    return net.eval()


def export_detector(net: TinySCRFD, path):
    import warnings

    names = [f"score_{s}" for s in STRIDES] + [f"bbox_{s}" for s in STRIDES] + [f"kps_{s}" for s in STRIDES]
    x = torch.zeros(1, 3, 128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["input.1"],
                          output_names=names, dynamic_axes={"input.1": {2: "height", 3: "width"},
                                                            **{n: {0: "anchors"} for n in names}})
    return path


def evaluate_detector(onnx_path, images: np.ndarray, lms: np.ndarray, det_size=(64, 64)) -> dict:
    """insightface's own SCRFD decoding on FFHQ-aligned faces: how often exactly the face is
    found (IoU >= 0.5 with the box implied by its landmarks), and the landmark error as a
    fraction of the eye distance."""
    import warnings

    from insightface.model_zoo import get_model

    det = get_model(str(onnx_path), providers=["CPUExecutionProvider"])
    det.prepare(ctx_id=-1, input_size=det_size, det_thresh=0.5)
    gt = face_boxes(lms)
    found, extra, errs = 0, 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for im, box, lm in zip(images, gt, lms):
            dets, kps = det.detect(np.ascontiguousarray(im[..., ::-1]), input_size=det_size)
            if len(dets) == 0:
                continue
            d = dets[0, :4]
            ix = max(0, min(d[2], box[2]) - max(d[0], box[0])) * max(0, min(d[3], box[3]) - max(d[1], box[1]))
            iou = ix / ((d[2] - d[0]) * (d[3] - d[1]) + (box[2] - box[0]) * (box[3] - box[1]) - ix)
            if iou >= 0.5:
                found += 1
                eye = np.linalg.norm(lm[1] - lm[0])
                errs.append(np.linalg.norm(kps[0] - lm, axis=1).mean() / eye)
            extra += len(dets) - 1
    n = len(images)
    return {"images": n, "detection_rate": found / n, "extra_detections_per_image": extra / n,
            "landmark_error_eye_fraction": float(np.mean(errs)) if errs else None, "det_size": list(det_size)}
