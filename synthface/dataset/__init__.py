"""Balanced identity datasets: the resumable, sharded writer, exporters and merge."""

from .merge import dataset_metrics, improved_recall, merge
from .writer import DatasetConfig, generate_dataset, shard_from_env

__all__ = ["DatasetConfig", "generate_dataset", "shard_from_env", "merge", "dataset_metrics", "improved_recall"]
