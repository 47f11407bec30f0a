"""The errors a user can cause, and the exit code each one gives.

Everything here is a mistake of the user's or of their environment (a bad file, a missing
download, a wrong flag): the command line prints it as one line that names the file or
argument and what to do, without a traceback (``--debug`` shows one). Any other exception is a
bug and keeps its traceback.

=========  ==================================================================
exit code  meaning
=========  ==================================================================
0          success
1          the command ran but failed in part: some inputs failed, training stopped
2          bad usage or bad input: a flag, a config key, a file (image, annotations,
           detections, checkpoint, class list) that is missing or malformed
3          pretrained weights are missing and cannot be downloaded, or a server that an
           upload needs cannot be reached (offline)
4          the environment failed: disk full, no permission, device not available
130        interrupted (Ctrl-C); what was finished is kept
143        terminated (SIGTERM: ``kill``, a job scheduler); what was finished is kept
=========  ==================================================================
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_WEIGHTS = 3
EXIT_ENVIRONMENT = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


SETTINGS = frozenset({
    # detection (clip4hoi.options.RULES) and the model's source
    "batch_size", "draw", "draw_score", "every", "fps", "lost_seconds", "max_gap", "max_size",
    "min_length", "min_score", "mode", "off_score", "on_score", "precision", "test_scale",
    "threads", "top_k", "track_buffer", "workers", "checkpoint", "random_weights", "onnx",
    "boxes", "classes", "device", "overrides", "inputs", "out", "port",
    # training, testing, evaluation, data, the Hub
    "resume", "output_dir", "output", "train_annotations", "rare_threshold", "coco",
    "split_ids", "n_train", "n_test", "seed", "overwrite", "vocabulary", "out_dir", "run_dir",
    # commands (cli.WORDS)
    "detect", "export_onnx"})
"""The settings a message may name as ``{name}`` (``tests/test_wording.py`` checks that
the library names no other and that each has a command-line word). Only these are
placeholders: any other ``{word}`` — a prompt template's ``{action}``, a path of the
user's — is left as written."""

NAME = re.compile(r"\{([a-z_]+)\}")
"""A ``{word}`` in a message: a setting when the word is in :data:`SETTINGS`."""


def worded(text: str, label: Callable[[str], str] = str) -> str:
    """``text`` with each setting it names as ``{name}`` called ``label(name)``: by its name
    (the default: ``{resume}`` -> ``resume``), or as the command line calls it
    (``cli.flag``: ``--resume``). Everything the library says to a user — errors, printed
    lines, the reason of a choice — names settings this way, so that the wording of flags
    lives in ``cli.py`` only."""
    return NAME.sub(lambda match: label(match.group(1)) if match.group(1) in SETTINGS
                    else match.group(0), text)


class UserError(Exception):
    """A mistake of the user's: the message names the file or argument and what to do.

    The message names the settings of the library as ``{name}`` (``{resume}``,
    ``{output_dir}``, :func:`worded`; the names of :data:`SETTINGS`): ``str(error)`` shows
    their names, :meth:`worded` another label (the command line shows its flags). Any other
    ``{word}`` (a prompt template's ``{action}``, a path of the user's) stays as written."""

    exit_code = EXIT_USAGE

    def __init__(self, message: object = "", *args: object) -> None:
        self.message = str(message)
        super().__init__(self.worded(str), *args)

    def worded(self, label: Callable[[str], str]) -> str:
        """The message with each setting called ``label(name)`` (e.g. its flag)."""
        return worded(self.message, label)

    def __reduce__(self) -> tuple:   # pickled (another process) with its placeholders
        return type(self), (self.message, *self.args[1:]), self.__dict__


class InputError(UserError, ValueError):
    """A file or argument is missing, malformed or out of range."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that a setting names does not exist."""


class EnvironmentFault(UserError, OSError):
    """The machine refused: disk full, permission denied, device not available."""

    exit_code = EXIT_ENVIRONMENT


class OptionError(InputError):
    """An option (a setting of ``detect``, the API or the demo) has a value out of range.

    ``option`` is the option's name in the library (``top_k``). The message is ``"{option}
    {value}: {problem}"`` (``"{option}: {problem}"`` when ``value`` is None); ``problem``
    names other options as ``{name}`` (:class:`UserError`); ``value`` is shown as it is.
    """

    def __init__(self, option: str, value: object, problem: str) -> None:
        self.option, self.value, self.problem = option, value, problem
        super().__init__(problem)

    def worded(self, label: Callable[[str], str]) -> str:
        value = "" if self.value is None else f" {self.value}"
        return f"{label(self.option)}{value}: {worded(self.problem, label)}"

    def __reduce__(self) -> tuple:
        return type(self), (self.option, self.value, self.problem), self.__dict__


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights are neither on disk nor downloadable; the message says what to
    download and where to put it."""

    exit_code = EXIT_WEIGHTS


class UnreachableError(UserError):
    """A server that an upload or download needs cannot be reached (offline, a firewall,
    a wrong endpoint)."""

    exit_code = EXIT_WEIGHTS


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a job scheduler stopping the job), raised in the main thread
    like Ctrl-C so that every writer removes its temporary files on the way out."""

    exit_code = EXIT_TERMINATED


@contextlib.contextmanager
def sigterm_raises(replace: bool = False) -> Iterator[None]:
    """While the block runs, SIGTERM (``kill PID``, a scheduler, ``torchrun`` ending a job)
    raises :class:`Terminated` in the main thread, as Ctrl-C raises ``KeyboardInterrupt``:
    writers complete or remove their files instead of the process vanishing. Nothing changes
    outside the main thread, or where a SIGTERM handler is already set (the command line's,
    an application's around the API) unless ``replace`` (the command line, which owns its
    process); forked workers (data loading) keep the default."""
    if threading.current_thread() is not threading.main_thread() or \
            (not replace and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    pid = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        if os.getpid() != pid:   # a forked worker: end as the default does
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
