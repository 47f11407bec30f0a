"""Writing result files so that nothing already done is lost; reading large JSON fast.

:func:`write_atomic` is how every result file of the package is written (detections,
evaluation reports, checkpoints, training state): the data goes to a temporary file with a
unique name in the destination's folder, is flushed to the disk (``fsync``) and then
renamed over the destination in one step. A reader — or a second run writing the same
folder — sees the old file or the new one, never a torn one; a full disk or a crash leaves
the old file as it was and no temporary file behind.

:func:`read_json` parses the large JSON inputs (annotation and detection files) at the
speed of ``orjson``, with the cyclic garbage collector paused (:func:`gc_paused`).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gc
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from clip4hoi.errors import EnvironmentFault, InputError

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

    Raises :class:`InputError` naming ``what`` (e.g. ``--json``) and the path.
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
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=".tmp")
    except OSError as error:
        raise _fault(error, path) from error
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
            raise _fault(error, path) from error
        raise
    _fsync_folder(path.parent)
    return path


def _fault(error: OSError, path: Path) -> OSError:
    """``error`` as an :class:`EnvironmentFault` naming ``path`` when it is the machine's
    refusal; other ``OSError`` s are returned unchanged."""
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
