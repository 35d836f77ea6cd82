"""The demo world's asset paths (defined in synthface.assets, a base-layer module)."""

from ..assets import ASSETS, REBUILD, asset, attribute_classifier_path, audit_dir, generator_path, pack_dir

__all__ = ["ASSETS", "REBUILD", "asset", "attribute_classifier_path", "audit_dir", "generator_path", "pack_dir"]
