"""Identity embedders: uint8 RGB FFHQ-aligned images [N, H, W, 3] in, L2-normalised embeddings out.

    world / world-audit       the demo world's recogniser / its independent audit recogniser
    onnx:PATH                 any recognition ONNX insightface loads (ArcFaceONNX: 112x112 input)
    insightface:PACK_DIR      the recognition model of a model pack (e.g. buffalo_l)
    torchscript:PATH          a TorchScript module taking [N, 3, 112, 112] RGB in [-1, 1]
    arcface:PATH              an arcface_torch model.pt state dict (torch module, differentiable)
    torch:PATH                synthface's backbone.safetensors, or torch:world-recognizer (differentiable)

Alignment: `fixed` (default) cuts the 112x112 ArcFace crop with the one similarity transform from
FFHQ's aligned layout to the ArcFace template; `detect` runs the pack's detector and insightface's
5-point norm_crop on each image, falling back to the fixed crop when no face is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..align import arcface_crop, to_float
from ..errors import SynthfaceError
from ..fileio import file_digest


def _normalise(e: np.ndarray, where: str) -> np.ndarray:
    e = np.asarray(e, np.float32)
    if not np.isfinite(e).all():
        raise SynthfaceError(f"{where} produced NaN or inf embeddings")
    n = np.linalg.norm(e, axis=1, keepdims=True)
    if (n == 0).any():
        raise SynthfaceError(f"{where} produced all-zero embeddings")
    return e / n


def _aligned(crops, size: int) -> torch.Tensor:
    x = to_float(crops)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


class OnnxEmbedder:
    def __init__(self, path, providers: Sequence[str] | None = None, batch_size: int = 128, align: str = "fixed",
                 detector: Optional[Path] = None):
        from insightface.model_zoo import get_model

        self.path = Path(path)
        if not self.path.is_file():
            raise SynthfaceError(f"recogniser {self.path} does not exist")
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.model = get_model(str(self.path), providers=self.providers)
        if self.model is None or getattr(self.model, "taskname", None) != "recognition":
            raise SynthfaceError(f"{self.path} is not a recognition model to insightface (it needs a square, static "
                                 "input of 112 or more and exactly one output)")
        self.size = int(self.model.input_size[0])
        self.batch_size = batch_size
        if align not in ("fixed", "detect"):
            raise SynthfaceError("align must be fixed or detect")
        self.align, self.detector_path, self._det = align, detector, None
        self.undetected = 0
        if align == "detect" and detector is None:
            raise SynthfaceError("align=detect needs a detector: use insightface:PACK_DIR with a pack holding one")

    def _crops(self, images) -> torch.Tensor:
        if self.align == "fixed":
            return arcface_crop(images, self.size)
        from insightface.utils import face_align

        if self._det is None:
            from insightface.model_zoo import get_model
            self._det = get_model(str(self.detector_path), providers=self.providers)
            self._det.prepare(ctx_id=-1, input_size=(images.shape[2], images.shape[1]))
        out = []
        for im in np.asarray(images):
            bgr = np.ascontiguousarray(im[..., ::-1])
            _, kps = self._det.detect(bgr, max_num=1)
            if kps is None or len(kps) == 0:
                self.undetected += 1
                out.append(arcface_crop(im[None], self.size)[0])
                continue
            crop = face_align.norm_crop(bgr, kps[0], image_size=self.size)[..., ::-1]
            out.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float())
        return torch.stack(out)

    def embed(self, images) -> np.ndarray:
        outs = []
        for s in range(0, len(images), self.batch_size):
            x = self._crops(images[s:s + self.batch_size])
            x = ((x - self.model.input_mean) / self.model.input_std).numpy().astype(np.float32)
            outs.append(self.model.session.run(self.model.output_names, {self.model.input_name: x})[0])
        return _normalise(np.concatenate(outs), str(self.path))

    def embed_aligned(self, crops) -> np.ndarray:
        """Embeddings of crops that are already aligned to the ArcFace template (in batches: a whole
        dataset's crops in one run held GBs of activations)."""
        outs = []
        for s in range(0, max(len(crops), 1), self.batch_size):  # an empty input still gives [0, D]
            x = _aligned(crops[s:s + self.batch_size], self.size)
            x = ((x - self.model.input_mean) / self.model.input_std).numpy().astype(np.float32)
            outs.append(self.model.session.run(self.model.output_names, {self.model.input_name: x})[0])
        return _normalise(np.concatenate(outs), str(self.path))

    def describe(self) -> dict:
        return {"kind": "onnx", "path": str(self.path), "sha256": file_digest(self.path), "align": self.align}


class TorchScriptEmbedder:
    """Loading TorchScript runs the module's own (scripted) code: use only files you trust."""

    def __init__(self, path, device: str = "cpu", batch_size: int = 128):
        self.path = Path(path)
        if not self.path.is_file():
            raise SynthfaceError(f"recogniser {self.path} does not exist")
        try:
            self.net = torch.jit.load(str(self.path), map_location=device).eval()
        except RuntimeError as e:
            raise SynthfaceError(f"{self.path} is not a TorchScript module: {str(e).splitlines()[0]}") from None
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def embed(self, images) -> np.ndarray:
        outs = []
        for s in range(0, len(images), self.batch_size):
            x = (arcface_crop(images[s:s + self.batch_size], 112) - 127.5) / 127.5
            outs.append(self.net(x.to(self.device)).float().cpu().numpy())
        return _normalise(np.concatenate(outs), str(self.path))

    @torch.no_grad()
    def embed_aligned(self, crops) -> np.ndarray:
        outs = []
        for s in range(0, max(len(crops), 1), self.batch_size):  # an empty input still gives [0, D]
            x = (_aligned(crops[s:s + self.batch_size], 112) - 127.5) / 127.5
            outs.append(self.net(x.to(self.device)).float().cpu().numpy())
        return _normalise(np.concatenate(outs), str(self.path))

    def describe(self) -> dict:
        return {"kind": "torchscript", "path": str(self.path), "sha256": file_digest(self.path)}


def find_recognition(pack: Path) -> Path:
    from insightface.model_zoo import get_model

    for p in sorted(pack.glob("*.onnx")):
        m = get_model(str(p), providers=["CPUExecutionProvider"])
        if m is not None and getattr(m, "taskname", None) == "recognition":
            return p
    raise SynthfaceError(f"model pack {pack} holds no recognition model")


def find_detector(pack: Path) -> Optional[Path]:
    hits = sorted(p for p in pack.glob("*.onnx") if p.name.startswith(("det", "scrfd")))
    return hits[0] if hits else None


def load_embedder(spec: str, device: str = "cpu", align: str = "fixed"):
    spec = spec.strip()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
    if spec in ("world", "world-audit"):
        from ..assets import asset
        pack = asset("pack") if spec == "world" else asset("audit")
        return OnnxEmbedder(pack / "recognition.onnx", providers, align=align,
                            detector=asset("pack") / "det.onnx" if align == "detect" else None)
    kind, _, path = spec.partition(":")
    if kind == "onnx" and path:
        return OnnxEmbedder(path, providers, align=align)
    if kind == "insightface" and path:
        pack = Path(path)
        if not pack.is_dir():
            raise SynthfaceError(f"model pack {pack} is not a directory")
        return OnnxEmbedder(find_recognition(pack), providers, align=align, detector=find_detector(pack))
    if kind == "torchscript" and path:
        return TorchScriptEmbedder(path, device)
    if kind in ("arcface", "torch") and path:  # differentiable: the embedder's .module is the nn.Module
        from .torch_embedder import TorchBackboneEmbedder
        return TorchBackboneEmbedder(path, device=device, kind=kind)
    raise SynthfaceError(f"unknown recogniser {spec!r}: use world, world-audit, onnx:PATH, insightface:PACK_DIR, "
                         "torchscript:PATH, arcface:PATH or torch:PATH")
