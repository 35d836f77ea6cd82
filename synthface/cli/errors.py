"""The CLI's one error path: every failure that reaches the top-level group becomes one message (no
traceback) that names the input, what is wrong and how to fix it.

Exit codes: 2 when the command line itself is wrong (click's usage errors, an unknown SYNTHFACE_OPS
value), 1 for everything else (an unreadable file, permission denied, disk full, out of memory, a
SynthfaceError raised by the API). An unexpected exception is a bug: its traceback goes to a file in
the temporary folder, named in the message, unless SYNTHFACE_DEBUG=1 asks for it on the terminal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import click

from ..errors import SynthfaceError
from ..weights import scrub_torch_advice

OPS_MODES = ("auto", "cuda", "ref")


def _where(e: OSError) -> str:
    names = [str(n) for n in (e.filename, getattr(e, "filename2", None)) if n]
    return " -> ".join(names) if names else "a file"


def os_error_message(e: OSError, command: str) -> str:
    """One line for an OSError: which path, what happened, what to do."""
    path = _where(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device while {command} was writing {path}; free some space or choose "
                "another output folder, then run the same command again (finished parts are kept)")
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied: {path}; make it readable/writable for you (chmod, chown) or choose another "
                "location")
    if e.errno == errno.EROFS:
        return f"{path} is on a read-only file system; choose an output folder on a writable disk"
    if isinstance(e, FileNotFoundError):
        return f"{path}: no such file or folder; check the path (and that an earlier step wrote it)"
    if isinstance(e, IsADirectoryError):
        return f"{path} is a folder where {command} needs a file; give the path of a file"
    if isinstance(e, NotADirectoryError):
        return f"{path}: part of this path is a file where {command} needs a folder; check the path"
    if e.errno == errno.ENAMETOOLONG:
        return f"{path}: the name is too long for the file system; choose a shorter path"
    if e.errno == errno.EMFILE:
        return f"{command} ran out of open-file handles; raise the limit (ulimit -n) or use fewer workers"
    why = e.strerror or str(e) or type(e).__name__
    return f"{path}: {why} (operating-system error {e.errno}); check the path, the disk and its permissions"


def memory_message(command: str) -> str:
    return (f"out of memory: {command} asked for more memory than this machine has; ask for less (a smaller "
            "--n, --batch, seed range or dataset) or split the job into shards")


def _is_out_of_memory(e: BaseException) -> bool:
    # torch reports CPU and CUDA allocation failures as RuntimeError subclasses, not MemoryError
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def internal_error_message(e: BaseException, command: str) -> str:
    """A bug, not a bad input: keep the traceback in a file instead of the user's terminal."""
    try:
        fd, path = tempfile.mkstemp(prefix="synthface-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        where = f"; the details are in {path}"
    except OSError:
        where = "; run it again with SYNTHFACE_DEBUG=1 for the details"
    return (f"{command} stopped on an unexpected error ({type(e).__name__}: {e}); this is a bug in synthface, "
            f"please report it{where}")


@contextlib.contextmanager
def removed_on_failure(path):
    """For a command that writes one report folder and has nothing to resume: when it fails, the folder
    it created is removed again, so a failure leaves nothing behind (a folder that existed is kept)."""
    path = Path(path) if path else None
    existed = path is None or path.exists()
    try:
        yield
    except BaseException:
        if not existed and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        raise


def check_environment() -> None:
    """Settings read from the environment are checked before any command runs (they are inputs too)."""
    ops = os.environ.get("SYNTHFACE_OPS")
    if ops is not None and ops.strip().lower() not in OPS_MODES:
        raise click.UsageError(f"SYNTHFACE_OPS={ops!r} is not a known setting; set it to auto, cuda or ref "
                               "(or unset it for auto)")


class SynthfaceGroup(click.Group):
    """The top-level group: runs the command and turns whatever escapes it into one message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = scrub_torch_advice(e.message)  # messages built from torch's text elsewhere, too
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the one place every failure is put into words
            raise click.ClickException(explain(e, _command(ctx))) from None


def _command(ctx: click.Context) -> str:
    name = ctx.invoked_subcommand
    return f"synthface {name}" if name else "synthface"


def explain(e: Exception, command: str = "synthface") -> str:
    if isinstance(e, SynthfaceError):
        return scrub_torch_advice(str(e))
    if type(e).__name__ == "UnidentifiedImageError":  # PIL: a file named like an image that is not one
        return f"{e}: the file is damaged or not an image; replace or remove it"
    if isinstance(e, OSError):
        if e.errno == errno.EPIPE:  # output piped into `head`: not an error of ours
            raise e
        return os_error_message(e, command)
    if isinstance(e, MemoryError) or _is_out_of_memory(e):
        return memory_message(command)
    if os.environ.get("SYNTHFACE_DEBUG") == "1":
        raise e
    return internal_error_message(e, command)


def run_api(fn, *args, **kwargs):
    """Call into the API; its SynthfaceError becomes the command's one-line error."""
    try:
        return fn(*args, **kwargs)
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None


def api_iter(gen):
    """Iterate an API generator, as run_api calls a function."""
    try:
        yield from gen
    except SynthfaceError as e:
        raise click.ClickException(str(e)) from None
