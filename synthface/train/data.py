"""Face datasets for training: synthface's own dataset output, any ImageFolder, arcface_torch
RecordIO, or an identity-labelled CSV, with identity and attribute labels.

Sources (`FaceDataset(source)` picks by what it finds):
- a synthface dataset folder: `manifest.jsonl` (one line per image) and `imagefolder/`, or with
  `format="rec"` its `rec/train.rec` (the manifest then supplies the attributes, in record order);
- a RecordIO file `train.rec` (with `train.idx` beside it) or a folder holding them;
- an ImageFolder: one sub-folder per identity (sorted folder order = label, as arcface_torch and
  torchvision number them); attributes from a `labels.jsonl` (synthface world render: `file`
  column) or a Hugging Face `metadata.jsonl` (`file_name` column) in it, when present;
- a CSV with a header `path,identity[,attribute...]`, paths relative to the CSV's folder.

Each item is a dict: `image` (float [3, S, S], RGB, (x - mean) / std, insightface's recogniser
convention by default), `identity` (0..C-1, in sorted identity order) and one integer per requested
attribute (its index in `classes_[name]`). Numeric attributes with many values (age) come as floats.
Augmentation (horizontal flip, small brightness / contrast / saturation jitter) is off by default;
when on, it is drawn from a generator seeded by (seed, epoch, item), so it does not depend on
worker processes or on where a run was resumed.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import SynthfaceError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# manifest columns that are bookkeeping, not labels
_NOT_LABELS = {"path", "file", "file_name", "identity", "image_index", "probs", "prior_seed", "attempt", "noise_seed",
               "mix_seed", "w_ref", "psi", "noise_mode", "consistency", "separation_max_similarity",
               "leakage_similarity", "generator_hash", "dataset_version"}


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SynthfaceError(f"{path} line {n} is not JSON ({e.msg})") from None
    return rows


def read_recordio_index(rec: Path) -> tuple[list[int], list[float]]:
    """Byte offsets and labels of the image records of an arcface_torch RecordIO file."""
    idx = rec.with_suffix(".idx")
    if not idx.is_file():
        raise SynthfaceError(f"{rec} has no index {idx.name} beside it")
    offsets = {}
    for line in idx.read_text().splitlines():
        if line.strip():
            k, off = line.split("\t")
            offsets[int(k)] = int(off)
    with open(rec, "rb") as f:
        def header(key):
            f.seek(offsets[key])
            magic, length = struct.unpack("<II", f.read(8))
            if magic != 0xCED7230A:
                raise SynthfaceError(f"{rec}: record {key} is not a RecordIO record (bad magic)")
            payload = f.read(min(length & ((1 << 29) - 1), 24 + 4 * 16))
            flag, label, _, _ = struct.unpack_from("<IfQQ", payload)
            labels = list(struct.unpack_from(f"<{flag}f", payload, 24)) if flag else [label]
            return flag, labels
        keys = sorted(offsets)
        if 0 in offsets:
            flag, lab = header(0)
            keys = list(range(1, int(lab[0]))) if flag == 2 else [k for k in keys if k != 0]
        labels = [header(k)[1][0] for k in keys]
    return [offsets[k] for k in keys], labels


def read_record_image(rec: Path, offset: int) -> Image.Image:
    with open(rec, "rb") as f:
        f.seek(offset)
        _, length = struct.unpack("<II", f.read(8))
        payload = f.read(length & ((1 << 29) - 1))
    flag = struct.unpack_from("<I", payload)[0]
    return Image.open(io.BytesIO(payload[24 + 4 * flag:]))


class FaceDataset(torch.utils.data.Dataset):
    """Face images with identity and attribute labels (see the module docstring).

    labels: attribute names to return besides `identity` (e.g. ("cell", "group", "gender")).
    min_images: identities with fewer images are an error, or dropped with `drop_small=True`
    (counted in `dropped_identities_`); recognition needs 2 to make genuine pairs.
    size: output side (resized if the files differ); crop="arcface" first warps FFHQ-aligned
    full-face images onto the ArcFace template (synthface world render output).
    """

    def __init__(self, source, labels: Sequence[str] = (), format: str = "auto", size: int = 112,
                 crop: str = "none", mean: float = 127.5, std: float = 127.5, augment: bool = False,
                 min_images: int = 1, drop_small: bool = False, seed: int = 0):
        self.source = source
        self.labels = tuple(labels)
        self.format = format
        self.size = size
        self.crop = crop
        self.mean, self.std = mean, std
        self.augment = augment
        self.min_images = min_images
        self.drop_small = drop_small
        self.seed = seed
        self.epoch = 0
        self._load()

    # -- reading the index
    def _load(self):
        src = Path(self.source)
        if not src.exists():
            raise SynthfaceError(f"dataset {src} does not exist")
        if self.crop not in ("none", "arcface"):
            raise SynthfaceError(f"crop {self.crop!r}: choose none or arcface")
        fmt = self.format
        if fmt == "auto":
            if src.is_file():
                fmt = "csv" if src.suffix.lower() == ".csv" else "rec" if src.suffix == ".rec" else ""
            elif (src / "manifest.jsonl").is_file():
                fmt = "synthface"
            elif (src / "train.rec").is_file():
                fmt = "rec"
            else:
                fmt = "imagefolder"
            if not fmt:
                raise SynthfaceError(f"{src}: give a folder (synthface dataset or ImageFolder), a .rec or a .csv file")
        rows: list[dict]
        self._rec: Optional[Path] = None
        if fmt == "synthface":
            rows = [{**r, "path": str(src / r["path"])} for r in _read_jsonl(src / "manifest.jsonl")]
        elif fmt == "rec":
            rec = src if src.is_file() else (src / "rec" / "train.rec" if (src / "rec").is_dir() else src / "train.rec")
            if not rec.is_file():
                raise SynthfaceError(f"no RecordIO file at {rec}")
            offsets, labs = read_recordio_index(rec)
            self._rec = rec
            manifest = rec.parent.parent / "manifest.jsonl"
            meta = _read_jsonl(manifest) if manifest.is_file() else None
            if meta is not None and len(meta) != len(offsets):
                raise SynthfaceError(f"{manifest} has {len(meta)} lines but {rec} {len(offsets)} images; "
                                     "rerun `synthface merge`")
            rows = [{**(meta[i] if meta else {}), "identity": int(lab), "path": off}
                    for i, (off, lab) in enumerate(zip(offsets, labs))]
        elif fmt == "csv":
            rows = self._read_csv(src)
        elif fmt == "imagefolder":
            rows = self._read_imagefolder(src)
        else:
            raise SynthfaceError(f"unknown dataset format {fmt!r}; choose auto, synthface, rec, imagefolder or csv")
        self.format_ = fmt
        if not rows:
            raise SynthfaceError(f"dataset {src} holds no images")
        for name in self.labels:
            if name == "identity":
                continue
            if any(name not in r for r in rows):
                have = sorted(k for k in rows[0] if k not in _NOT_LABELS)
                raise SynthfaceError(f"dataset {src} has no {name!r} label for every image; it has: "
                                     f"{', '.join(have) or 'identity only'}")
        # identities: small ones are an error or dropped
        counts: dict = {}
        for r in rows:
            counts[r["identity"]] = counts.get(r["identity"], 0) + 1
        small = sorted((k for k, c in counts.items() if c < self.min_images), key=_sort_key)
        if small and not self.drop_small:
            raise SynthfaceError(f"{len(small)} of {len(counts)} identities in {src} have fewer than "
                                 f"{self.min_images} images (e.g. {', '.join(map(str, small[:5]))}); verification "
                                 "needs two images of an identity: drop them (--drop-small) or add images")
        self.dropped_identities_ = len(small)
        small_set = set(small)
        rows = [r for r in rows if r["identity"] not in small_set]
        if not rows:
            raise SynthfaceError(f"no identity in {src} has {self.min_images} or more images")
        self._set_rows(rows)

    def _set_rows(self, rows: list[dict], classes: Optional[dict] = None):
        """Labels for these rows: identities numbered 0..C-1 in sorted order; attribute classes
        kept from `classes` when given (a subset keeps its parent's attribute numbering)."""
        self.identities_ = sorted({r["identity"] for r in rows}, key=_sort_key)
        index = {v: i for i, v in enumerate(self.identities_)}
        self.paths_ = [r["path"] for r in rows]
        self.targets_ = {"identity": torch.tensor([index[r["identity"]] for r in rows])}
        self.classes_ = {"identity": list(self.identities_)}
        for name in self.labels:
            if name == "identity":
                continue
            vals = [r[name] for r in rows]
            if classes is not None and name not in classes or classes is None and (
                    all(isinstance(v, float) for v in vals)
                    or (all(isinstance(v, (int, float)) for v in vals) and len(set(vals)) > 64)):
                self.targets_[name] = torch.tensor(vals, dtype=torch.float32)
            else:
                self.classes_[name] = classes[name] if classes is not None else sorted(set(vals), key=_sort_key)
                pos = {v: i for i, v in enumerate(self.classes_[name])}
                self.targets_[name] = torch.tensor([pos[v] for v in vals])
        self.rows_ = rows

    def subset(self, items: Sequence[int]) -> "FaceDataset":
        """The same dataset restricted to these items; identities renumbered 0..C'-1."""
        new = copy.copy(self)
        new._set_rows([self.rows_[i] for i in items], {k: v for k, v in self.classes_.items() if k != "identity"})
        return new

    def split_identities(self, held_out: float = 0.1, seed: int = 0, min_held_out: int = 2):
        """(train items, held-out items): a seeded random fraction of identities, all their images."""
        n = self.num_classes
        k = max(min_held_out, int(round(held_out * n)))
        if k >= n:
            raise SynthfaceError(f"{n} identities cannot be split into a training set and {k} held-out "
                                 "identities for verification; use more identities")
        held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
        ident = self.targets_["identity"].tolist()
        return [i for i, v in enumerate(ident) if v not in held], [i for i, v in enumerate(ident) if v in held]

    def _read_csv(self, src: Path) -> list[dict]:
        with open(src, newline="") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "path" not in cols or "identity" not in cols:
                raise SynthfaceError(f"{src} needs a header with the columns path,identity[,attribute...] "
                                     f"(it has {', '.join(cols) or 'none'})")
            rows = []
            for n, r in enumerate(reader, 2):
                if not r["path"] or not r["identity"]:
                    raise SynthfaceError(f"{src} line {n}: empty path or identity")
                p = Path(r["path"])
                rows.append({**{k: _number(v) for k, v in r.items() if k not in ("path", "identity")},
                             "identity": _number(r["identity"]), "path": str(p if p.is_absolute() else src.parent / p)})
        missing = [r["path"] for r in rows if not Path(r["path"]).is_file()]
        if missing:
            raise SynthfaceError(f"{src}: {len(missing)} listed images do not exist (e.g. {missing[0]})")
        return rows

    def _read_imagefolder(self, src: Path) -> list[dict]:
        folder = src / "imagefolder" if (src / "imagefolder").is_dir() else src
        ids = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        extra: dict = {}
        for name, key in (("labels.jsonl", "file"), ("metadata.jsonl", "file_name")):
            if (folder / name).is_file():
                extra = {r[key]: r for r in _read_jsonl(folder / name) if key in r}
                break
        rows = []
        for label in ids:
            for p in sorted((folder / label).iterdir()):
                if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."):
                    rel = f"{label}/{p.name}"
                    info = {k: v for k, v in extra.get(rel, {}).items() if k not in _NOT_LABELS}
                    rows.append({**info, "identity": label, "path": str(p)})
        if not rows:
            raise SynthfaceError(f"no images ({'/'.join(e[1:] for e in IMAGE_EXT)}) in identity sub-folders of "
                                 f"{folder}: an ImageFolder has one folder of images per identity")
        return rows

    # -- items
    @property
    def num_classes(self) -> int:
        return len(self.identities_)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths_)

    def _pil(self, i: int) -> Image.Image:
        """Item i as an RGB PIL image of side `size` (cropped onto the ArcFace template if asked)."""
        p = self.paths_[i]
        im = read_record_image(self._rec, p) if self._rec is not None else Image.open(p)
        with im:
            im = im.convert("RGB")
        if self.crop == "arcface":
            if im.width != im.height:
                raise SynthfaceError(f"{p} is {im.width}x{im.height}; crop=arcface takes square FFHQ-aligned faces")
            return im.transform((self.size, self.size), Image.AFFINE, _pil_affine(im.width, self.size),
                                resample=Image.BILINEAR)
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.BILINEAR)
        return im

    def image(self, i: int) -> np.ndarray:
        """Item i as uint8 [S, S, 3] RGB, before augmentation and normalisation."""
        return np.asarray(self._pil(i)).copy()

    def __getitem__(self, i: int) -> dict:
        # numpy rather than torch for the per-image work: small torch ops cost more in thread
        # hand-offs than in arithmetic
        level = augment_level(self.augment)
        im = self._pil(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if level == "strong":
            im = _geometric(im, rng)
        x = np.asarray(im, np.float32).transpose(2, 0, 1)
        if level != "none":
            x = self._augment(x, rng)
        item = {"image": torch.from_numpy(np.ascontiguousarray((x - self.mean) / self.std, np.float32))}
        for name, t in self.targets_.items():
            item[name] = t[i]
        return item

    @staticmethod
    def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[3, H, W] float: horizontal flip (p = 0.5), brightness, contrast and saturation each
        scaled by U(0.9, 1.1)."""
        r = rng.random(4)
        if r[0] < 0.5:
            x = x[:, :, ::-1]
        b, c, s = 0.9 + 0.2 * r[1:]
        x = x * np.float32(b)
        m = x.mean()
        x = (x - m) * np.float32(c) + m
        grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = (x - grey) * np.float32(s) + grey
        return np.clip(x, 0, 255)

    def label_counts(self, name: str = "identity") -> dict:
        t = self.targets_[name]
        return {self.classes_[name][k]: int(v) for k, v in enumerate(torch.bincount(t).tolist())}


AUGMENT_LEVELS = ("none", "basic", "strong")


def augment_level(augment) -> str:
    """True/False (the older boolean setting) or a level name -> none | basic | strong."""
    if augment is True or augment is False:
        return "basic" if augment else "none"
    if augment not in AUGMENT_LEVELS:
        raise SynthfaceError(f"augment {augment!r}: choose none, basic (flip + colour jitter) or strong "
                             "(basic + rotation, scale, shift and blur)")
    return augment


# strong augmentation (the recipe synthetic-face training uses against narrow synthetic variation, cf.
# DigiFace-1M): a random similarity about the crop centre and an occasional Gaussian blur; ranges are generic
# face-recognition values, not fitted to any benchmark
ROTATE_DEG, SCALE, SHIFT, BLUR_P, BLUR_SIGMA = 10.0, 0.1, 0.04, 0.3, (0.3, 1.2)


def _geometric(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotation U(+-10 deg), scale U(1 +- 0.1), shift U(+-4 % of the side) per axis, then with p = 0.3 a
    Gaussian blur of sigma U(0.3, 1.2) px at 112; borders filled with the edge's mean colour."""
    from PIL import ImageFilter

    r = rng.random(6)
    a = np.deg2rad(ROTATE_DEG * (2 * r[0] - 1))
    sc = 1 + SCALE * (2 * r[1] - 1)
    n = im.width
    t = SHIFT * n * (2 * r[2:4] - 1)
    # PIL's AFFINE maps output -> input: x_in = M^-1 (x_out - c - t) + c
    c = n / 2
    ca, sa = np.cos(a) / sc, np.sin(a) / sc
    ox, oy = c + t[0], c + t[1]
    coeffs = (ca, sa, c - ca * ox - sa * oy, -sa, ca, c + sa * ox - ca * oy)
    arr = np.asarray(im)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(0).astype(np.uint8)
    im = im.transform(im.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=tuple(int(v) for v in edge))
    if r[4] < BLUR_P:
        sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * r[5]
        im = im.filter(ImageFilter.GaussianBlur(float(sigma * n / 112)))
    return im


@functools.lru_cache(maxsize=16)
def _pil_affine(image_size: int, out_size: int) -> tuple:
    """PIL's AFFINE coefficients (output -> input, continuous coordinates) of the FFHQ -> ArcFace
    similarity: synthface.align's matrix works on pixel indices (centres at integers), PIL on
    pixel areas (centres at +0.5), hence the half-pixel shifts."""
    from ..align import arcface_matrix
    M = np.vstack([arcface_matrix(image_size, out_size), [0, 0, 1]])
    inv = np.linalg.inv(M)[:2]
    lin, t = inv[:, :2], inv[:, 2]
    t = t - lin @ [0.5, 0.5] + 0.5
    return (lin[0, 0], lin[0, 1], t[0], lin[1, 0], lin[1, 1], t[1])


def _number(v: str):
    """CSV cells: ints and floats as numbers, the rest as text."""
    for cast in (int, float):
        try:
            return cast(v)
        except (TypeError, ValueError):
            pass
    return v


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
