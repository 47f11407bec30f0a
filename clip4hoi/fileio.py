"""Writing result files so that nothing already done is lost; reading large JSON fast.

:func:`write_atomic` is how every result file of the package is written (detections,
evaluation reports, checkpoints, training state): the data goes to a temporary file with a
unique name in the destination's folder, is flushed to the disk (``fsync``) and then
renamed over the destination in one step. A reader — or a second run writing the same
folder — sees the old file or the new one, never a torn one; a full disk or a crash leaves
the old file as it was and no temporary file behind.

Temporary files and folders are named ``.NAME.HOST-PID.RANDOM.tmp`` (:func:`temp_prefix`):
a writer removes its own on every error, and :func:`sweep_temp_files` removes those that a
killed process (``kill -9``, a power cut) of this machine left. :func:`folder_lock` keeps
two runs from writing one folder at once.

:func:`read_json` parses the large JSON inputs (annotation and detection files) at the
speed of ``orjson``, with the cyclic garbage collector paused (:func:`gc_paused`).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gc
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from clip4hoi.errors import EnvironmentFault, InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (folder_lock does nothing)
    fcntl = None  # type: ignore[assignment]

ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES,
                                errno.EPERM, errno.EROFS})
"""``OSError`` numbers that are the machine's refusal (disk full, file too large, no
permission, read-only file system), reported as :class:`EnvironmentFault` (exit 4)."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (resolving links; False if either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: str | Path, inputs: Iterable[str | Path] = (),
                      what: str = "output") -> Path:
    """Check, before any work is done, that a result can be written to ``path``: it is not
    a folder and not one of ``inputs``. Returns ``path`` as a ``Path``.

    Raises :class:`InputError` naming ``what`` (e.g. ``{output}``,
    :func:`~clip4hoi.errors.worded`) and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name (e.g. "
                         f"{path / 'results.json'})")
    for source in inputs:
        if same_file(path, source):
            raise InputError(f"{what} {path} is the input file {source}; it would be "
                             f"overwritten: write the result elsewhere")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{what} {path}: {path.parent} is a file, not a folder")
    return path


def write_atomic(path: str | Path, data: bytes | str, inputs: Iterable[str | Path] = ()
                 ) -> Path:
    """Write ``data`` (``str`` is UTF-8 encoded) to ``path`` atomically: unique temporary
    file in the same folder, ``fsync``, rename. The folder is created when missing.

    ``inputs``: files that must not be overwritten (the command's inputs); writing over one
    raises :class:`InputError` before anything is written. A disk that is full or refuses
    the write raises :class:`EnvironmentFault` naming ``path``; the previous content of
    ``path`` is then unchanged and the temporary file removed. Returns ``path``.
    """
    path = check_output_path(path, inputs)
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name),
                                       suffix=".tmp")
    except OSError as error:
        raise environment_fault(error, path) from error
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:  # a full disk, Ctrl-C, ...: never leave a partial file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise environment_fault(error, path) from error
        raise
    _fsync_folder(path.parent)
    return path


def environment_fault(error: OSError, path: str | Path) -> OSError:
    """``error`` as an :class:`EnvironmentFault` naming ``path`` when it is the machine's
    refusal (disk full, file too large, no permission, read-only); other ``OSError`` s are
    returned unchanged. For writers that do not go through :func:`write_atomic` (images,
    appended logs): ``raise environment_fault(error, path) from error``."""
    if error.errno not in ENVIRONMENT_ERRNOS:
        return error
    full = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fault = EnvironmentFault(f"cannot write {path}: {error.strerror}"
                             + (" (is the disk full?)" if full else ""))
    fault.errno = error.errno  # str(fault) stays the message: no strerror/filename set
    return fault


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------ temporary files

_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
_TEMP_NAME = re.compile(r"^\..*\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]*\.tmp$", re.DOTALL)
_KEPT = 100
"""Bytes of the destination's name kept in a temporary name (a 255-byte name must still
leave room for the rest)."""


def temp_prefix(name: str) -> str:
    """The start of a temporary file's or folder's name for the destination ``name``:
    ``.NAME.HOST-PID.`` (``mkstemp`` / ``mkdtemp`` add ``RANDOM`` and the ``.tmp`` suffix),
    so that :func:`sweep_temp_files` can tell whose it is."""
    kept = name.encode()[:_KEPT].decode(errors="ignore")
    return f".{kept}.{_HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (when unsure: yes)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # PermissionError: it runs, as another user
        return True
    return True


def sweep_temp_files(folder: str | Path, unnamed: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temporary files and folders (:func:`temp_prefix`) in ``folder`` that
    processes of this machine which no longer run left behind (killed in a write). Those of
    running processes, and of other machines sharing the folder, are kept.

    ``unnamed``: destination names (``"step_"``: any that starts so) whose temporary files
    without a process in their name (``.NAME.RANDOM.tmp``, as older versions named them)
    go too: only for a writer that holds the folder's :func:`folder_lock`, so that nobody
    else can be writing them.
    Returns what was removed; a folder that is missing or cannot be listed is left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            if not (unnamed and entry.name.endswith(".tmp")
                    and entry.name.startswith(tuple(f".{name}" for name in unnamed))):
                continue
        elif match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:   # a read-only folder, or another sweep was first
            continue
        removed.append(Path(entry.path))
    return removed


# ------------------------------------------------------------------------ folder lock

LOCK_NAME = ".clip4hoi.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, name: str = LOCK_NAME,
                target: str | Path | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock (``fcntl.flock`` on the file ``name`` in it, created with the
    folder if missing) while the block runs, so that a second run writing the same
    ``target`` (default: the folder) is refused: :class:`InputError` naming ``what`` (the
    setting, e.g. ``{output_dir}``: :func:`~clip4hoi.errors.worded`), ``target`` and the
    holder's pid and command. The lock dies with its process (``kill -9`` leaves no stale
    lock); the file is removed on release, and the folder too when the block created it
    and left it empty. On systems without ``fcntl`` (Windows) nothing is locked. Yields
    the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file; give a folder")
    created = not folder.exists()
    lock = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, f"{what} {target or folder}", what) if fcntl else None
    except OSError as error:
        raise environment_fault(error, lock) from error
    try:
        if fd is not None:
            with contextlib.suppress(OSError):   # who holds it, for a second run's message
                os.ftruncate(fd, 0)
                os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()}: "
                              f"{' '.join(['clip4hoi', *sys.argv[1:]])[:500]} (since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')})").encode())
        yield folder
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(lock)
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):   # only when empty
                folder.rmdir()


def _acquire(lock: Path, subject: str, what: str) -> int:
    """A descriptor of ``lock``, exclusively ``flock``-ed, or :class:`InputError` saying
    that ``subject`` is in use."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip()
            os.close(fd)
            raise InputError(
                f"{subject} is in use by another clip4hoi run ("
                f"{holder or 'the process is starting'}): wait until it ends, or choose "
                f"another {what}") from None
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                return fd   # a file system without locks (some network mounts): go on
            os.close(fd)
            raise
        except BaseException:
            os.close(fd)
            raise
        # The last holder removes the file on release: a lock taken on a removed file
        # locks nothing, so retry on the file now at that path.
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            return fd
        os.close(fd)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block. Parsing a large JSON file
    allocates millions of lists and dicts, and each allocation threshold crossed makes the
    collector traverse them all again: on a 157 MiB detection file that more than doubles
    the parse time. The parsed data holds no reference cycles, so nothing is missed."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_json(path: str | Path) -> Any:
    """The parsed content of a UTF-8 JSON file (a byte-order mark is skipped): ``orjson``
    with the garbage collector paused; what ``orjson`` refuses is parsed again by the
    standard ``json`` module, which accepts the ``NaN`` and ``Infinity`` that Python
    writes (the caller's validation then names them) and words the errors.
    :class:`InputError` naming the file when it is not UTF-8 or not JSON."""
    path = Path(path)
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    with gc_paused():
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not a UTF-8 text file ({error})") from error
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error})") from error
