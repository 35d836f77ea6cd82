"""Labelled variation directions: how to move an identity's w to change its pose, expression, light
or glasses and nothing the demographic model reads.

Fit (the Syn-Multi-PIE-style protocol): a bank of prior latents is generated and read by a nuisance
regressor (synthface.labelling.nuisance); a ridge regression per nuisance, y ~ B w + c, gives its
linear readout in W, with its held-out R^2. Vary: image a of an identity draws a target nuisance
vector t, one real face's values (the reference faces' nuisance distribution, so an identity is
varied over the real data's range with the real correlations, e.g. smiling with an open mouth), and
moves w by the shift a prior face's latent makes, on average, when its nuisances differ by
r = t - (B w + c): for jointly Gaussian (w, y) that is the conditional-mean step

    delta = strength * P Sigma B^T (B Sigma B^T + N)^-1 r

(Sigma: the prior covariance of W; N: the readouts' residual variances, so a weak readout moves w
little instead of far; P: the Sigma-orthogonal projection onto A^T delta = 0, A the latent model's
projection, so the demographic cell is untouched). Without reference faces the targets are the
generated bank's own values (the generator's range; the dataset card says which was used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..generator.synthesis import prior_latents, synthesize
from ..utils import keyed_rng, log_stderr

MIN_R2 = 0.05  # a nuisance whose readout explains less than this on held-out latents is not varied


@dataclass
class NuisanceDirections:
    names: list[str]
    readout: np.ndarray          # B [k, w_dim]: nuisance ~ B w + intercept
    intercept: np.ndarray        # [k]
    r2: np.ndarray               # [k] held-out R^2 of the linear readout on generated faces
    targets: np.ndarray          # [M, k] target nuisance vectors (one row per real face)
    target_source: str
    cov: np.ndarray = field(default=None)       # Sigma [w_dim, w_dim], prior covariance of W
    residual: np.ndarray = field(default=None)  # [k] residual variance of each readout (held out)
    step: np.ndarray = field(default=None)  # M^+ restricted to the nuisance rows, [w_dim, k] (see `prepare`)
    used: np.ndarray = field(default=None)  # [k] bool: nuisances that are varied (R^2 >= MIN_R2)

    def prepare(self, A: np.ndarray) -> "NuisanceDirections":
        """Precompute the step matrix for the latent model's projection A [w_dim, d]."""
        self.used = self.r2 >= MIN_R2
        B = self.readout[self.used].astype(np.float64)
        S, A = self.cov, np.asarray(A, np.float64)
        step = S @ B.T @ np.linalg.inv(B @ S @ B.T + np.diag(self.residual[self.used]))
        SA = S @ A
        self.step = step - SA @ np.linalg.solve(A.T @ SA, A.T @ step)  # A^T step = 0
        return self

    def offsets(self, w: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
        """One offset for latent w [w_dim] toward a random target row."""
        return self.offset_and_target(w, rng, strength)[0]

    def offset_and_target(self, w: np.ndarray, rng: np.random.Generator, strength: float):
        """(offset [w_dim], the target row [k] it aims at)."""
        t = self.targets[rng.integers(0, len(self.targets))]
        r = (t - (self.readout @ w + self.intercept))[self.used]
        return (strength * (self.step @ r)).astype(np.float32), t

    def arrays(self) -> dict:
        return {"names": np.array(self.names), "readout": self.readout, "intercept": self.intercept, "r2": self.r2,
                "targets": self.targets, "target_source": np.array(self.target_source), "cov": self.cov,
                "residual": self.residual}

    @classmethod
    def from_arrays(cls, z) -> "NuisanceDirections":
        return cls(names=[str(n) for n in z["names"]], readout=np.asarray(z["readout"], np.float64),
                   intercept=np.asarray(z["intercept"], np.float64), r2=np.asarray(z["r2"], np.float64),
                   targets=np.asarray(z["targets"], np.float64), target_source=str(z["target_source"]),
                   cov=np.asarray(z["cov"], np.float64), residual=np.asarray(z["residual"], np.float64))

    def summary(self) -> dict:
        return {"nuisances": {n: {"r2_held_out": round(float(r), 4), "varied": bool(r >= MIN_R2),
                                  "target_mean": round(float(self.targets[:, k].mean()), 4),
                                  "target_std": round(float(self.targets[:, k].std()), 4)}
                              for k, (n, r) in enumerate(zip(self.names, self.r2))},
                "targets": self.target_source, "target_faces": int(len(self.targets))}


def _ridge(W: np.ndarray, Y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column ridge readouts (alpha by 5-fold CV on 80 %), then R^2 on the held-out 20 % and a
    refit on everything. Returns (B, intercept, r2, held-out residual variance)."""
    from sklearn.linear_model import RidgeCV

    n = len(W)
    perm = keyed_rng(seed, 0x5217).permutation(n)
    tr, te = perm[: int(0.8 * n)], perm[int(0.8 * n):]
    alphas = np.logspace(-2, 4, 13)
    r2, res = np.zeros(Y.shape[1]), np.zeros(Y.shape[1])
    B = np.zeros((Y.shape[1], W.shape[1]))
    c = np.zeros(Y.shape[1])
    for k in range(Y.shape[1]):
        m = RidgeCV(alphas=alphas).fit(W[tr], Y[tr, k])
        resid = Y[te, k] - m.predict(W[te])
        r2[k] = 1 - (resid ** 2).sum() / max(((Y[te, k] - Y[te, k].mean()) ** 2).sum(), 1e-12)
        res[k] = max(float((resid ** 2).mean()), 1e-12)
        full = RidgeCV(alphas=[m.alpha_]).fit(W, Y[:, k])
        B[k], c[k] = full.coef_, full.intercept_
    return B, c, r2, res


def fit_directions(model, G, regressor, n: int = 4000, seed: int = 0, reference_images: Optional[np.ndarray] = None,
                   reference_source: str = "reference faces", batch_size: int = 64,
                   log: Callable[[str], None] = log_stderr) -> NuisanceDirections:
    """Label n prior latents with `regressor`, fit one readout per nuisance, and take the targets
    from `reference_images` (uint8 FFHQ-aligned real faces) when given, else from the bank itself."""
    if n < 50:
        raise SynthfaceError(f"labelled variation directions need at least 50 generated faces, got {n}")
    names = regressor.names
    if not names:
        raise SynthfaceError("the nuisance regressor names no nuisance outputs")
    seeds = keyed_rng(seed, 0xD12E).integers(0, 2**32 - 1, n).tolist()
    W = prior_latents(G, seeds, model.truncation_psi_).astype(np.float64)
    log(f"labelled variations: reading {len(names)} nuisances ({', '.join(names)}) off {n} generated faces")
    Y = np.concatenate([regressor.predict_matrix(synthesize(G, W[s:s + 512].astype(np.float32), model.noise_mode_,
                                                            batch_size)) for s in range(0, n, 512)]).astype(np.float64)
    B, c, r2, res = _ridge(W, Y, seed)
    cov = np.cov(W, rowvar=False) + 1e-6 * np.eye(W.shape[1])
    if reference_images is not None and len(reference_images):
        targets, source = regressor.predict_matrix(reference_images).astype(np.float64), reference_source
    else:
        targets, source = Y, f"the generator's own faces ({n}; no reference images were given)"
    log("labelled variations: held-out R^2 of the W readouts: " +
        ", ".join(f"{k} {v:.2f}" for k, v in zip(names, r2)))
    return NuisanceDirections(names, B, c, r2, targets, source, cov=cov, residual=res)
