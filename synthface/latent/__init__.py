"""Demographic latent model: labelled latent banks, a disentangled projection of W with a
density per cell, and verified sampling of any cell."""

from .bank import LatentBank, build_bank, generator_hash
from .cells import parse_cell, parse_cells
from .model import DemographicLatentModel
from .report import run_sampling
from .sampling import prior_latents, sample_cell, sample_cells, uniform_baseline

__all__ = ["LatentBank", "build_bank", "generator_hash", "DemographicLatentModel", "parse_cell", "parse_cells",
           "run_sampling", "prior_latents", "sample_cell", "sample_cells", "uniform_baseline"]
