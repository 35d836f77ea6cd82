"""Train the demo world's nuisance regressor on renderer faces and export it as an ONNX asset.

    python scripts/build_nuisance_regressor.py [--out synthface/world/assets] [--ids 3000] [--images 6]

Writes nuisance.onnx and nuisance.json (input convention, outputs, held-out metrics); see
synthface/world/nuisance.py. Deterministic for the same arguments on the same torch build.
"""

import argparse
import time

import torch

from synthface.world.nuisance import build

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="synthface/world/assets")
    ap.add_argument("--ids", type=int, default=3000)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    build(a.out, n_ids=a.ids, images=a.images, epochs=a.epochs)
    print(f"done in {time.time() - t0:.0f}s")
