import os

import numpy as np
import pytest

from synthface.fileio import atomic_write
from synthface.fileio import save_image_atomic


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_outputs_get_the_normal_file_mode(tmp_path, umask022):
    p = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    q = save_image_atomic(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    assert os.stat(p).st_mode & 0o777 == 0o644 and os.stat(q).st_mode & 0o777 == 0o644


def test_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.bin").write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "keep.bin", boom)
    assert (tmp_path / "keep.bin").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["keep.bin"]
