"""Per-group verification and fairness metrics (the evaluation report builds on these)."""

from .metrics import (best_threshold, bootstrap_ci, eer, fdr, fmr, fnmr, garbe, gini, inequity_rate,
                      kfold_accuracy, roc, ser, std_accuracy, tar_at_fmr, threshold_at_fmr)

__all__ = ["fmr", "fnmr", "threshold_at_fmr", "roc", "tar_at_fmr", "eer", "kfold_accuracy", "best_threshold",
           "std_accuracy", "ser", "fdr", "inequity_rate", "gini", "garbe", "bootstrap_ci"]
