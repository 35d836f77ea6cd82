"""Writer locks on output directories (synthface.locks) and the sweep of temporaries (synthface.fileio):
a second writer is refused with the holder's pid, shards of one job share, a lock of a killed
process is broken, and only dead writers' temporaries are swept."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from synthface.fileio import atomic_write, disk_full_message, is_temporary, sweep_temporaries, temp_path
from synthface.locks import LOCK_DIR, DirectoryLock, DirectoryLocked

HOLD = textwrap.dedent("""
    import sys, time
    from synthface.locks import DirectoryLock
    d, slot, job, shared = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4] == "1"
    with DirectoryLock(d, slot, job=job, shared=shared):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def holder():
    procs = []

    def start(d, slot="writer", job="", shared=False):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(d), slot, job, "1" if shared else "0"],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_second_writer_is_refused_with_the_holders_pid(tmp_path, holder):
    p = holder(tmp_path / "ds", "generate-00000-of-00001", "job1", True)
    with pytest.raises(DirectoryLocked, match=rf"same part of it, pid {p.pid} on "):
        DirectoryLock(tmp_path / "ds", "generate-00000-of-00001", job="job1", shared=True).__enter__()
    with pytest.raises(DirectoryLocked, match=rf"pid {p.pid}.*kill {p.pid}"):
        DirectoryLock(tmp_path / "ds", "merge").__enter__()


def test_shards_of_one_job_share_and_other_jobs_are_refused(tmp_path, holder):
    p = holder(tmp_path / "ds", "generate-00000-of-00002", "jobA", True)
    with DirectoryLock(tmp_path / "ds", "generate-00001-of-00002", job="jobA", shared=True) as lock:
        assert lock.others_alive
    with pytest.raises(DirectoryLocked, match=rf"different settings, pid {p.pid}"):
        DirectoryLock(tmp_path / "ds", "generate-00001-of-00002", job="jobB", shared=True).__enter__()


def test_killed_holders_lock_is_broken_and_the_folder_left_clean(tmp_path, holder):
    d = tmp_path / "ds"
    p = holder(d, "label")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (d / LOCK_DIR / "label").is_file()  # a kill -9 leaves its file
    said = []
    with DirectoryLock(d, "label", log=said.append) as lock:
        assert not lock.others_alive and [h.pid for h in lock.broken_] == [p.pid]
    assert f"stale lock of pid {p.pid}" in said[0]
    assert os.listdir(d) == []  # the last holder removes the lock folder


def test_one_process_may_take_its_own_lock_again_and_merge_inside_generate(tmp_path):
    d = tmp_path / "ds"
    with DirectoryLock(d, "generate-00000-of-00001", shared=True):
        with DirectoryLock(d, "generate-00000-of-00001", shared=True):
            pass
        assert (d / LOCK_DIR / "generate-00000-of-00001").is_file()  # still held by the outer one
        with DirectoryLock(d, "merge"):
            pass
    assert not (d / LOCK_DIR).exists()


def test_a_folder_made_by_a_failed_run_is_removed_but_an_existing_one_kept(tmp_path):
    d = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with DirectoryLock(d, "label"):
            raise RuntimeError("bad input found late")
    assert not d.exists()
    (tmp_path / "old").mkdir(mode=0o750)
    with DirectoryLock(tmp_path / "old", "label"):
        pass
    assert (tmp_path / "old").is_dir() and os.stat(tmp_path / "old").st_mode & 0o777 == 0o750


def test_sweep_runs_only_when_no_other_writer_is_alive(tmp_path, holder):
    d = tmp_path / "ds"
    d.mkdir()
    keep = [d / "a.png", d / ".hidden"]
    for p in keep:
        p.write_bytes(b"x")
    dead = [temp_path(d / "sub" / "x.npz"), d / "rec.tmp", temp_path(d / "render", directory=True)]
    (d / "rec.tmp").write_bytes(b"x")
    swept = []
    p = holder(d, "generate-00000-of-00002", "j", True)
    with DirectoryLock(d, "generate-00001-of-00002", job="j", shared=True, sweep=swept.append):
        pass
    assert swept == [] and all(x.exists() for x in dead)  # a live writer's temporaries are left alone
    p.kill()
    p.wait()
    with DirectoryLock(d, "merge", sweep=sweep_temporaries):
        pass
    assert not any(x.exists() for x in dead) and all(x.exists() for x in keep)


def test_temporary_names_are_recognised():
    assert is_temporary(".000.png.ab12cd_3.tmp") and is_temporary(".000.png.ab12cd_3.png")  # new and old
    assert is_temporary("train.rec.tmp") and not is_temporary(".hidden") and not is_temporary("000.png")


def test_disk_full_becomes_one_message_and_leaves_no_temporary(tmp_path):
    def full(f):
        f.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.bin"))
    with pytest.raises(Exception, match=r"no space left on the device of .*free some space"):
        with disk_full_message(tmp_path):
            atomic_write(tmp_path / "x.bin", full)
    assert os.listdir(tmp_path) == []
    with pytest.raises(PermissionError):  # other errors pass through unchanged
        with disk_full_message(tmp_path):
            raise PermissionError(errno.EACCES, "denied")


def test_world_render_keeps_the_folder_mode_and_leaves_no_temporaries(tmp_path, holder):
    from synthface.world import World
    from synthface.world.dataset import write_image_folder

    quiet = dict(size=32, log=lambda s: None)
    old = os.umask(0o022)
    try:
        (tmp_path / "empty").mkdir(mode=0o750)
        os.chmod(tmp_path / "empty", 0o750)
        write_image_folder(World(1), tmp_path / "empty", 2, 2, **quiet)
        new = write_image_folder(World(1), tmp_path / "new", 2, 2, **quiet)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "empty").st_mode & 0o777 == 0o750  # was replaced by a 0700 temp folder
    assert os.stat(new).st_mode & 0o777 == 0o755
    assert sorted(os.listdir(new)) == ["000000", "000001", "labels.jsonl"]
    # a second renderer is refused; a dead one's temporary folder is swept by the next run
    p = holder(tmp_path / "busy", "render")
    with pytest.raises(DirectoryLocked, match=f"pid {p.pid}"):
        write_image_folder(World(1), tmp_path / "busy", 2, 2, **quiet)
    p.kill()
    p.wait()
    temp_path(tmp_path / "busy" / "render", directory=True)
    write_image_folder(World(1), tmp_path / "busy", 2, 2, **quiet)
    assert sorted(os.listdir(tmp_path / "busy")) == ["000000", "000001", "labels.jsonl"]
    assert (tmp_path / "busy" / "labels.jsonl").read_bytes() == (new / "labels.jsonl").read_bytes()
