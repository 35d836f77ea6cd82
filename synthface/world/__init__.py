"""The built-in demo world: procedural faces with known demographics and identities."""

from .renderer import AGE_RANGE, FFHQ_LANDMARKS, GENDERS, GROUPS, draw_identities, draw_nuisance, landmarks, render
from .world import BALANCED, BIASED, World, labels_of, take

__all__ = ["AGE_RANGE", "FFHQ_LANDMARKS", "GENDERS", "GROUPS", "BALANCED", "BIASED", "World", "draw_identities",
           "draw_nuisance", "labels_of", "landmarks", "render", "take"]
