"""Optional Ray Data entry point: the shards of `generate_dataset` as a dataset of shard indices
mapped over a pool of actors (one GPU each when there are GPUs), each loading the networks once.
Needs `pip install "ray[data]"`; nothing else in synthface imports ray.

    synthface generate ... --ray 8            # 8 shards on the local Ray cluster, then merge
"""

from __future__ import annotations

from dataclasses import asdict

from ..errors import SynthfaceError
from .writer import DatasetConfig


class _ShardWorker:
    def __init__(self, model_path, network, out, cfg, labellers, schema, recognizer, align, num_shards):
        from .writer import load_job

        self.model, self.G, self.lab, self.emb = load_job(model_path, network, labellers, schema, recognizer, align)
        self.out, self.cfg, self.num_shards = out, DatasetConfig(**cfg), num_shards

    def __call__(self, batch):
        from .writer import generate_dataset

        done = []
        for i in batch["id"]:
            r = generate_dataset(self.model, self.G, self.lab, self.emb, self.out, self.cfg, int(i), self.num_shards,
                                 progress=False, log=lambda s: None)
            done.append(int(r["this_shard"]))
        return {"shard": batch["id"], "identities": done}


def run_with_ray(model_path, network, out, cfg: DatasetConfig, labellers, schema, recognizer, align="fixed",
                 num_shards: int = 2, address=None) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise SynthfaceError('--ray needs Ray: pip install "ray[data]"') from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    # from_items needs no read task, so the actors can take every CPU without starving the pipeline
    ds = ray.data.from_items([{"id": i} for i in range(num_shards)]).map_batches(
        _ShardWorker, batch_size=1, num_gpus=gpus, concurrency=num_shards,
        fn_constructor_args=(str(model_path), network, str(out), asdict(cfg), list(labellers), schema, recognizer,
                             align, num_shards))
    return [{"shard": int(r["shard"]), "identities": int(r["identities"])} for r in ds.take_all()]
