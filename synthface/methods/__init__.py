"""Fairness and privacy methods that work on face embeddings (fit on a frozen recogniser's output)."""

from .sensitivenets import SensitiveNets
from .erasure import INLP, LEACE
from .cid import CIDWeights, oracle_identity_weights
from .san import SemiAdversarialNet
from .san_ensemble import SANEnsemble
