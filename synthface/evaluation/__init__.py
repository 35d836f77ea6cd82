"""Per-group verification and fairness evaluation of face recognisers, with a readable report."""

from .evaluate import embeddings, group_metrics, pair_scores
from .identity_robustness import identity_robustness
from .leakage import leakage
from .pairs import load_items, load_pairs, make_pairs, save_pairs
from .report import run_evaluation

__all__ = ["load_items", "make_pairs", "save_pairs", "load_pairs", "embeddings", "pair_scores", "group_metrics",
           "run_evaluation", "identity_robustness", "leakage"]
