"""Balanced identity datasets: the resumable, sharded writer, exporters and merge."""

from .merge import dataset_metrics, improved_recall, merge, resolve_audit, run_merge
from .run import run_generate
from .writer import DatasetConfig, generate_dataset, load_job, shard_from_env

__all__ = ["DatasetConfig", "generate_dataset", "load_job", "run_generate", "shard_from_env", "merge",
           "resolve_audit", "run_merge", "dataset_metrics", "improved_recall"]
