"""Opt-in cross-check against NVIDIA's stylegan2-ada-pytorch (kept outside the repository).

Set SYNTHFACE_NVIDIA_REF=/path/to/stylegan2-ada-pytorch to run it; skipped otherwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REF = os.environ.get("SYNTHFACE_NVIDIA_REF")


@pytest.mark.skipif(not REF, reason="set SYNTHFACE_NVIDIA_REF to a stylegan2-ada-pytorch checkout")
def test_images_match_nvidia_reference_within_1e_4():
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_nvidia.py"
    out = subprocess.run([sys.executable, str(script), "--reference", REF, "--resolution", "32"],
                         capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout)
    assert report["cases"] >= 40
    assert report["worst_max_abs_diff"] <= 1e-4, report
    assert out.returncode == 0
