"""A small training run for tests/test_train_stack.py, run in-process or as a script (also under
torchrun): a conv net without batch statistics and an ArcFace head on synthetic images."""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from synthface.train.engine import PolyWarmup, Trainer, seed_everything
from synthface.train.losses import ArcFace, MarginHead


class Blobs(torch.utils.data.Dataset):
    """n images of 8 classes: a class-specific pattern plus noise, fixed by the seed; augmentation
    (a flip) drawn per sample from (epoch, index), as FaceDataset does."""

    def __init__(self, n=96, classes=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.proto = torch.randn(classes, 3, 16, 16, generator=g)
        self.labels = torch.arange(n) % classes
        self.noise = torch.randn(n, 3, 16, 16, generator=g) * 0.5
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.proto[self.labels[i]] + self.noise[i]
        if torch.rand([], generator=torch.Generator().manual_seed(self.epoch * 100003 + i)) < 0.5:
            x = x.flip(2)
        return {"image": x, "label": self.labels[i]}


class Net(nn.Module):
    def __init__(self, dropout=0.0, classes=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.PReLU(8), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 16, 16))
        self.head = MarginHead(16, classes, ArcFace(16.0, 0.3))

    sleep = 0.0

    def forward(self, batch):
        time.sleep(self.sleep)
        emb = self.body(batch["image"])
        return self.head(emb, batch["label"]), {"emb_norm": emb.norm(dim=1).mean().detach()}


def run(out, epochs=2, batch=8, seed=0, dropout=0.0, checkpoint_every=0, stop_after=None, resume=False,
        sleep=0.0, lr=0.05, n=96, classes=8, evaluate=None, channels_last=False):
    seed_everything(seed)
    net = Net(dropout, classes)

    def opt(m):
        return torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def sched(o, total):
        return torch.optim.lr_scheduler.LambdaLR(o, PolyWarmup(total, 2))

    net.sleep = sleep   # a step that takes a while, so a test can kill the process mid-run
    tr = Trainer(out, epochs, batch, seed=seed, device="cpu", checkpoint_every=checkpoint_every, log_every=1,
                 stop_after=stop_after, resume=resume, channels_last=channels_last, log=lambda s: None)
    tr.fit(net, Blobs(n, classes, seed), opt, sched, evaluate=evaluate, meta={"task": "test", "classes": classes})
    return tr


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tr = run(a.out, a.epochs, a.batch, dropout=a.dropout, checkpoint_every=a.checkpoint_every, resume=a.resume,
             sleep=a.sleep)
    if not torch.distributed.is_initialized() and int(__import__("os").environ.get("RANK", 0)) == 0:
        torch.save(tr.model_.state_dict(), Path(a.out) / "final.pt")
    sys.exit(0)
