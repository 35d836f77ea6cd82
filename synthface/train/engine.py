"""The training loop every synthface trainer shares.

`Trainer(...).fit(model, dataset, make_optimizer)` runs epochs of steps over a map-style dataset,
where `model(batch)` returns the loss (or `(loss, {name: value})`). Around that it provides:

- seeding (python, numpy, torch), DataLoader worker seeds, deterministic kernels on CUDA on request
  (CPU kernels already are);
- data order that depends only on (seed, epoch): torch's DistributedSampler with drop_last, so a
  run under `torchrun` with N processes sees exactly the batches of a single-process run with the
  same global batch (each process takes batch/N of them; DDP averages the gradients);
- an atomic checkpoint (`checkpoint.pt`, plain tensors and containers only, read back with
  weights_only=True) holding model, optimiser, scheduler, grad scaler, every process's RNG states
  and the position (epoch, batch in epoch, step). A killed run resumed from it ends with the same
  weights as an uninterrupted one on CPU, because mid-epoch resumption skips the batches already
  seen in the same permutation and the RNG states continue where they were;
- `log.jsonl` (one JSON object per line: step losses, epoch metrics); a progress bar only on a
  terminal;
- AMP (bf16 or fp16 with a grad scaler) on CUDA only; channels_last on any device when asked (oneDNN's
  convolutions are faster in it on CPU too: about 25 % less CPU time per step for r18, mbf and the
  world recogniser, see docs/benchmarks.md);
- a non-finite loss stops the run with a SynthfaceError naming the step, before the optimiser
  touches the weights, so the last checkpoint on disk is the last good state;
- `stop_after` (global steps) stops cleanly after writing a checkpoint: deterministic
  interruption for tests.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import SynthfaceError
from ..fileio import atomic_write

CHECKPOINT_FORMAT = "synthface.train-checkpoint"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------ seeding and RNG state

def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state, as plain tensors and containers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    # weights_only loading returns tuples as lists for nested parts; random wants tuples
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def worker_init(worker_id: int) -> None:
    """DataLoader workers: torch seeds each worker from the loader's generator; numpy and python
    follow it, so augmentation drawn from them is reproducible too."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# ------------------------------------------------------------------------------ distributed

@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (RANK and WORLD_SIZE set, more than one
    process): nccl on CUDA, gloo on CPU. A single process runs without a group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dist.is_initialized():
        return DistInfo(rank, world, local, False)
    use_cuda = resolve_device(device, local).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, True)


def leave_distributed(di: DistInfo, finished: bool) -> None:
    """Leave the process group this process joined. After a finished run every rank first waits at
    a barrier: a rank that tears gloo down while its peer is still writing can abort the peer
    ("terminate called without an active exception"). After an error there is no barrier, since
    the other ranks may never arrive."""
    if not di.initialised_here:
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SynthfaceError(f"--device {device} asked for CUDA, but this torch has no usable GPU; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


# ------------------------------------------------------------------------------ schedules

class PolyWarmup:
    """lr multiplier: linear warm-up over `warmup` steps, then (1 - progress)^power down to 0 at
    `total` steps (arcface_torch's PolyScheduler shape). A plain object, so LambdaLR can save it."""

    def __init__(self, total: int, warmup: int = 0, power: float = 2.0):
        self.total, self.warmup, self.power = int(total), int(warmup), float(power)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        return max(0.0, 1 - (step - self.warmup) / span) ** self.power


# ------------------------------------------------------------------------------ the loop

class SkippingSampler(DistributedSampler):
    """DistributedSampler that can start an epoch after its first `skip` indices (mid-epoch resume)."""

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return super().__len__() - self.skip


def _to_device(batch, device, channels_last: bool):
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, channels_last) for v in batch)
    return batch


def _plain(v):
    """JSON-friendly number."""
    if isinstance(v, (torch.Tensor, np.generic)):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else str(v)
    return v


def append_jsonl(path, row: dict) -> None:
    """One JSON object per line, appended (lines are small, so a crash loses at most the last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")


def truncate_log(path, step: int) -> None:
    """Drop log lines written after `step` (by a run killed before its next checkpoint), so a
    resumed run's log reads as one run."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in keep).encode()))


def save_checkpoint(path, state: dict) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    try:
        st = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling refused or a truncated file
        raise SynthfaceError(f"{path} is not a readable synthface training checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
        raise SynthfaceError(f"{path} is not a synthface training checkpoint")
    return st


def load_state_strict(module: nn.Module, state: dict, what: str) -> None:
    """load_state_dict with one clear message naming the first missing / unexpected / misshapen tensors."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} of another shape (e.g. {'; '.join(shape[:2])})")
        raise SynthfaceError(f"{what} does not fit this model: {', '.join(parts)} tensors; it was made for another "
                             "architecture or size: use a new --out, or the settings it was trained with")
    module.load_state_dict(state)


class Trainer:
    """Configuration of a training run; `fit` runs it (resuming from `out/checkpoint.pt` when
    `resume` is set) and leaves the trained (unwrapped) model in `model_`.

    batch_size is the GLOBAL batch: under torchrun each of N processes takes batch_size / N.
    checkpoint_every: also checkpoint every this many steps (0: at the end of each epoch only).
    amp: "none", "bf16" or "fp16" (CUDA only; ignored on CPU so a CPU run stays exact).
    deterministic: on CUDA, deterministic kernels at some cost in speed (CPU runs are deterministic
    without it).
    """

    def __init__(self, out, epochs: int, batch_size: int, seed: int = 0, device: str = "auto", amp: str = "none",
                 channels_last: bool = False, num_workers: int = 0, checkpoint_every: int = 0, log_every: int = 10,
                 grad_clip: Optional[float] = None, resume: bool = False, stop_after: Optional[int] = None,
                 deterministic: bool = False, progress: Optional[bool] = None,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)):
        self.out = out
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.num_workers = num_workers
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.grad_clip = grad_clip
        self.resume = resume
        self.stop_after = stop_after
        self.deterministic = deterministic
        self.progress = progress
        self.log = log

    # -- helpers a caller may use before fit
    @property
    def checkpoint_path(self) -> Path:
        return Path(self.out) / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return Path(self.out) / "log.jsonl"

    def _check(self, dataset, world: int):
        if self.epochs < 1:
            raise SynthfaceError(f"epochs is {self.epochs}; train for at least 1 epoch")
        if self.batch_size < 1 or self.batch_size % world:
            raise SynthfaceError(f"the global batch {self.batch_size} must be a positive multiple of the "
                                 f"{world} processes torchrun started")
        if self.amp not in ("none", "bf16", "fp16"):
            raise SynthfaceError(f"amp is {self.amp!r}; choose none, bf16 or fp16")
        n = len(dataset)
        if n == 0:
            raise SynthfaceError("the training set is empty")
        if n < self.batch_size:
            raise SynthfaceError(f"the training set has {n} images, fewer than one global batch of "
                                 f"{self.batch_size}; lower --batch")

    def fit(self, model: nn.Module, dataset, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
            make_scheduler: Optional[Callable[[torch.optim.Optimizer, int], Any]] = None,
            evaluate: Optional[Callable[[nn.Module, int], dict]] = None, meta: Optional[dict] = None,
            collate_fn=None) -> "Trainer":
        """model(batch) -> loss or (loss, metrics). make_scheduler(optimizer, total_steps) is stepped
        once per step. evaluate(model, epoch) -> metrics runs on the main process after each epoch
        (model in eval mode; it is put back in train mode). meta: JSON-able facts about the run
        (architecture, class count, ...) that must match when resuming."""
        di = init_distributed(self.device)
        finished = False
        try:
            self._fit(di, model, dataset, make_optimizer, make_scheduler, evaluate, meta or {}, collate_fn)
            finished = True
        finally:
            leave_distributed(di, finished)
        return self

    def _resume_or_seed(self, di, ckpt_path, meta, steps_per_epoch, total, model, optimizer, scheduler, scaler):
        """(epoch, batch within it, step) to start from: the checkpoint's, after checking it was written by
        this configuration, with every state restored; else a fresh, seeded start."""
        out = Path(self.out)
        epoch, batch0, step = 0, 0, 0
        if ckpt_path.exists():
            st = load_checkpoint(ckpt_path)
            old = json.loads(st["meta"])
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            if diff:
                raise SynthfaceError(
                    f"{ckpt_path} was written by a run with other settings: "
                    + "; ".join(f"{k} {old.get(k)!r} there, {meta.get(k)!r} now" for k in diff[:4])
                    + ". Resume with the same data and settings, or give a new --out")
            if st["global_batch"] != self.batch_size or st["steps_per_epoch"] != steps_per_epoch:
                raise SynthfaceError(f"{ckpt_path}: the run used a global batch of {st['global_batch']} "
                                     f"({st['steps_per_epoch']} steps per epoch), now {self.batch_size} "
                                     f"({steps_per_epoch}); resume with the same --batch and data")
            load_state_strict(model, st["model"], str(ckpt_path))
            optimizer.load_state_dict(st["optimizer"])
            if scheduler is not None and st.get("scheduler") is not None:
                scheduler.load_state_dict(st["scheduler"])
            if scaler is not None and st.get("scaler") is not None:
                scaler.load_state_dict(st["scaler"])
            epoch, batch0, step = int(st["epoch"]), int(st["batch"]), int(st["step"])
            states = st["rng"]
            if len(states) == di.world_size:
                set_rng_state(states[di.rank])
            else:  # another process count: data order is unchanged, per-process randomness reseeded
                seed_everything(self.seed + 1000003 * step + di.rank)
            if di.is_main:
                truncate_log(self.log_path, step)
                self.log(f"resumed from {ckpt_path} at step {step}/{total} (epoch {epoch + 1}, "
                         f"batch {batch0})")
        else:
            seed_everything(self.seed + di.rank)
            if self.resume and di.is_main:
                self.log(f"nothing to resume in {out}: starting a new run")
        return epoch, batch0, step

    def _optimizer_step(self, model, optimizer, scaler, loss) -> None:
        """Backward and step, through the fp16 grad scaler when there is one, with optional clipping."""
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if self.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            optimizer.step()

    def _fit(self, di: DistInfo, model, dataset, make_optimizer, make_scheduler, evaluate, meta, collate_fn):
        self._check(dataset, di.world_size)
        device = resolve_device(self.device, di.local_rank)
        out = Path(self.out)
        if di.is_main:
            out.mkdir(parents=True, exist_ok=True)
        if self.checkpoint_path.exists() and not self.resume:
            raise SynthfaceError(f"{out} already holds a training run (checkpoint.pt); pass --resume to continue "
                                 "it, or give a new --out")
        meta = json.loads(json.dumps(meta))  # what the checkpoint will hold, compared as JSON
        local_batch = self.batch_size // di.world_size
        sampler = SkippingSampler(dataset, num_replicas=di.world_size, rank=di.rank, shuffle=True, seed=self.seed,
                                  drop_last=True)
        with self._deterministic_kernels(device.type == "cuda"):
            run = self._start(di, device, model, sampler, local_batch, make_optimizer, make_scheduler, meta)
            self._loop(run, dataset, evaluate, collate_fn)

    @contextlib.contextmanager
    def _deterministic_kernels(self, cuda: bool):
        # CPU kernels give the same bits run to run at a fixed thread count, so nothing is switched
        # on there (use_deterministic_algorithms also imports torch._dynamo: seconds per process).
        # On CUDA determinism costs speed (cuBLAS workspace, no cuDNN autotuning): opt-in.
        prev_det = None
        if self.deterministic and cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            prev_det = (torch.are_deterministic_algorithms_enabled(),
                        torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            if prev_det is not None:
                torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
                torch.backends.cudnn.benchmark = prev_det[2]

    def _start(self, di, device, model, sampler, local_batch, make_optimizer, make_scheduler, meta) -> "_Run":
        """The model on its device, optimiser, scheduler and grad scaler, at the checkpoint's position
        when resuming (else seeded at step 0); the model wrapped in DDP under torchrun."""
        steps_per_epoch = len(sampler) // local_batch
        total = steps_per_epoch * self.epochs
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model)
        scheduler = make_scheduler(optimizer, total) if make_scheduler else None
        amp = self.amp if device.type == "cuda" else "none"
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        epoch, batch0, step = self._resume_or_seed(di, self.checkpoint_path, meta, steps_per_epoch, total, model,
                                                   optimizer, scheduler, scaler)
        self.total_steps_, self.steps_per_epoch_, self.model_, self.step_ = total, steps_per_epoch, model, step
        net = model
        if di.active:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
        return _Run(di, device, model, net, optimizer, scheduler, scaler, amp, sampler, local_batch, steps_per_epoch,
                    total, meta, epoch, batch0, step, batch0)

    def _loop(self, run: "_Run", dataset, evaluate, collate_fn) -> None:
        """Epochs of steps from the run's position; a checkpoint at each epoch's end, every
        checkpoint_every steps and at stop_after."""
        show = (self.progress if self.progress is not None else sys.stderr.isatty()) and run.di.is_main
        from tqdm import tqdm
        bar = tqdm(total=run.total, initial=run.step, unit="step", disable=not show, file=sys.stderr, leave=False)
        self.stopped_ = False
        t0, s0 = time.perf_counter(), run.step
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if run.amp == "bf16" else torch.float16)
                    if run.amp != "none" else contextlib.nullcontext())
        try:
            while run.epoch < self.epochs:
                loader = self._epoch_loader(run, dataset, collate_fn)
                run.net.train()
                run.batch_i = run.batch0
                for batch in loader:
                    if run.batch_i >= run.steps_per_epoch:
                        break
                    value, metrics = self._step(run, batch, autocast)
                    bar.update(1)
                    if run.di.is_main and (run.step % self.log_every == 0 or run.batch_i == run.steps_per_epoch):
                        rate = (time.perf_counter() - t0) / max(run.step - s0, 1)
                        append_jsonl(self.log_path, {"step": run.step, "epoch": run.epoch + 1, "loss": value,
                                                     "lr": run.optimizer.param_groups[0]["lr"],
                                                     "sec_per_step": rate, **metrics})
                    last = run.batch_i == run.steps_per_epoch
                    if last:
                        self._end_epoch(run, evaluate, value, t0)
                    stop = self.stop_after is not None and run.step >= self.stop_after
                    if last or stop or (self.checkpoint_every and run.step % self.checkpoint_every == 0):
                        self._checkpoint(run)
                    if stop:
                        self.stopped_, self.step_ = True, run.step
                        return
                    if last:
                        break
        finally:
            bar.close()
        self.step_ = run.step

    def _epoch_loader(self, run: "_Run", dataset, collate_fn) -> DataLoader:
        """This process's batches of the epoch (its permutation depends on seed and epoch only),
        skipping the ones a resumed run has already seen."""
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(run.epoch)
        run.sampler.set_epoch(run.epoch)
        run.sampler.skip = run.batch0 * run.local_batch
        gen = torch.Generator().manual_seed(self.seed * 1000003 + run.epoch * 1009 + run.di.rank)
        return DataLoader(dataset, batch_size=run.local_batch, sampler=run.sampler, drop_last=True,
                          num_workers=self.num_workers, worker_init_fn=worker_init, generator=gen,
                          pin_memory=run.device.type == "cuda", collate_fn=collate_fn)

    def _step(self, run: "_Run", batch, autocast) -> tuple[float, dict]:
        """One optimiser step; the loss (averaged over processes) is checked finite before it."""
        batch = _to_device(batch, run.device, self.channels_last)
        with autocast:
            res = run.net(batch)
        loss, metrics = (res if isinstance(res, tuple) else (res, {}))
        seen = loss.detach().float().reshape(1)
        if run.di.active:
            dist.all_reduce(seen)
            seen /= run.di.world_size
        value = seen.item()
        if not math.isfinite(value):
            ckpt_path = self.checkpoint_path
            raise SynthfaceError(
                f"the loss became {value} at step {run.step + 1} (epoch {run.epoch + 1}); training stopped "
                f"before that step changed any weight, and {ckpt_path} "
                f"{'holds the last good state' if ckpt_path.exists() else 'was never written'}. "
                "Lower --lr, or check the data")
        self._optimizer_step(run.model, run.optimizer, run.scaler, loss)
        if run.scheduler is not None:
            run.scheduler.step()
        run.step += 1
        run.batch_i += 1
        return value, metrics

    def _end_epoch(self, run: "_Run", evaluate, value: float, t0: float) -> None:
        """Evaluation and the epoch's log line on the main process; the position moves to the next epoch."""
        res_eval = {}
        if evaluate is not None and run.di.is_main:
            run.model.eval()
            with torch.no_grad():
                res_eval = evaluate(run.model, run.epoch) or {}
            run.model.train()
            append_jsonl(self.log_path, {"step": run.step, "epoch": run.epoch + 1, **res_eval})
        if run.di.is_main:
            self.log(f"epoch {run.epoch + 1}/{self.epochs} step {run.step}/{run.total}: loss {value:.4f} "
                     + " ".join(f"{k} {_plain(v)}" for k, v in res_eval.items())
                     + f" ({time.perf_counter() - t0:.0f}s)")
        run.epoch, run.batch_i, run.batch0 = run.epoch + 1, 0, 0

    def _checkpoint(self, run: "_Run") -> None:
        """Everything a resume needs, every process's RNG state included (gathered to the main one)."""
        states = [rng_state()]
        if run.di.active:
            states = [None] * run.di.world_size
            dist.all_gather_object(states, rng_state())
        if run.di.is_main:
            save_checkpoint(self.checkpoint_path, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "meta": json.dumps(run.meta),
                "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                "rng": states, "epoch": run.epoch, "batch": run.batch_i, "step": run.step,
                "global_batch": self.batch_size, "steps_per_epoch": run.steps_per_epoch,
                "world_size": run.di.world_size, "seed": self.seed, "finished": run.step >= run.total})


@dataclass
class _Run:
    """One fit's objects and its position (epoch, first batch of this epoch, batch, global step):
    the state a checkpoint saves and a resume restores."""
    di: DistInfo
    device: torch.device
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper under torchrun
    optimizer: Any
    scheduler: Any
    scaler: Any
    amp: str
    sampler: SkippingSampler
    local_batch: int
    steps_per_epoch: int
    total: int
    meta: dict
    epoch: int
    batch0: int
    step: int
    batch_i: int
