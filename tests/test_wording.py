"""Issue 18's rule: the library (everything but ``cli.py``) never names a command-line flag.

It names a setting by the name an API user passes (``resume``, ``output_dir``, ``classes``)
as ``{name}`` in what it says (:func:`clip4hoi.errors.worded`); the command line shows the
flag (``--resume``, :func:`clip4hoi.cli.flag`). The same fault reads in each user's words.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine import CONFIGS

from clip4hoi.cli import WORDS, build_parser, flag, main
from clip4hoi.config import TEMPLATE_FIELDS, ModelConfig, apply_overrides
from clip4hoi.data.metadata import load_classes
from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.engine.checkpoint import resolve_resume
from clip4hoi.errors import NAME, SETTINGS, InputError, MissingFileError, OptionError, worded
from clip4hoi.models.precision import describe_precision, resolve_precision
from clip4hoi.options import RULES

PACKAGE = Path(__file__).resolve().parents[1] / "clip4hoi"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
DOCUMENTS = {("clip4hoi/hub.py", "model_card"), ("clip4hoi/hub.py", "_training_lines"),
             ("clip4hoi/weights.py", "fetch_hub")}
"""Where the library may write a flag: the model card pushed to the Hub (a README for
command-line users) and the ``hf download --revision`` command (another tool's flag)."""


def _texts(tree: ast.Module) -> Iterator[tuple[str, int, str]]:
    """``(function, line, text)`` of every string constant of a module but its docstrings
    (the literal parts of f-strings included): what it raises, prints, warns, returns or
    passes on to be said (``folder_lock``'s ``what``, a default argument)."""
    documents = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}

    def visit(node: ast.AST, function: str) -> Iterator[tuple[str, int, str]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                id(node) not in documents:
            yield function, node.lineno, node.value
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    return visit(tree, "")


def _library() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "cli.py":
            yield str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text())


def test_the_library_says_no_flag() -> None:
    """No error, printed line, warning, reason or other text of the library outside
    ``cli.py`` (docstrings aside) names a flag."""
    found = [f"{name}:{line} ({function}): {text!r}" for name, tree in _library()
             for function, line, text in _texts(tree)
             if FLAG.search(text) and (name, function) not in DOCUMENTS]
    assert not found, "name the setting as {name} and let cli.py word it:\n" + "\n".join(found)


def test_every_setting_named_has_a_command_line_word() -> None:
    """Each ``{name}`` the library says is a flag or argument of some command (or one of
    the commands of :data:`WORDS`): a typo or a renamed flag would read wrong on the
    command line."""
    words = set()
    for command in build_parser()._subparsers._group_actions[0].choices.values():
        for action in command._actions:
            words.update(action.option_strings)
            if not action.option_strings:
                words.update({action.dest.upper(), str(action.metavar)})
    named = {match for _, tree in _library() for _, _, text in _texts(tree)
             for match in NAME.findall(text)}
    named -= set(TEMPLATE_FIELDS)   # the prompt templates' fields (config.py)
    assert {"resume", "output_dir", "overrides", "classes", "device", "precision"} <= named
    assert named <= SETTINGS and set(RULES) <= SETTINGS   # placeholders only where listed
    assert not SETTINGS & set(TEMPLATE_FIELDS)            # a template's field is never one
    unknown = {name: flag(name) for name in SETTINGS if flag(name) not in words
               and not WORDS.get(name, "").startswith("clip4hoi ")}
    assert not unknown


def test_worded_names_settings_by_label() -> None:
    error = InputError("{resume}: no checkpoint; or choose another {output_dir}")
    assert str(error) == "resume: no checkpoint; or choose another output_dir"
    assert error.worded(flag) == "--resume: no checkpoint; or choose another --output-dir"
    # an option's value is shown as given, placeholders only in the problem
    option = OptionError("top_k", "'{x}'", "must be below {max_size}")
    assert str(option) == "top_k '{x}': must be below max_size"
    assert option.worded(flag) == "--top-k '{x}': must be below --max-size"
    assert worded("{overrides} a=1 {inputs} {n_train}", flag) == "--set a=1 INPUT --train"
    assert worded("{'images': [...]} {} {Name}", flag) == "{'images': [...]} {} {Name}"
    # a user's text keeps its braces: a template field, a path
    assert str(InputError("template 'a person {action}' in /data/{split}/x.yaml: {seed}")) \
        == "template 'a person {action}' in /data/{split}/x.yaml: seed"


def _cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and "Traceback" not in "\n".join(lines)
    return code, lines[-1]


def test_the_same_fault_in_each_users_words(capsys: pytest.CaptureFixture,
                                            tmp_path: Path) -> None:
    """The API raises naming the setting, the command line prints the flag, same exit."""
    missing = tmp_path / "lists" / "missing.txt"
    with pytest.raises(MissingFileError) as api:
        load_classes(str(missing))
    assert isinstance(api.value, FileNotFoundError)
    assert str(api.value).startswith(f"classes {missing}: no such file")
    code, line = _cli(capsys, "detect", tmp_path / "a.png", "--classes", missing)
    assert code == api.value.exit_code == 2
    assert line == f"clip4hoi detect: error: --classes {missing}: no such file (classes " \
                   f"as text look like 'ride bicycle, hold cup')"

    with pytest.raises(InputError, match=r"^n_train and n_test must be 1 to"):
        make_synthetic(tmp_path / "data", n_train=0)
    code, line = _cli(capsys, "make-synthetic", tmp_path / "data", "--train", "0")
    assert code == 2 and "error: --train and --test must be 1 to" in line

    with pytest.raises(InputError, match=r"^overrides 'lr': expected KEY=VALUE$"):
        apply_overrides(ModelConfig(), ["lr"])
    code, line = _cli(capsys, "test", CONFIGS / "smoke.yaml", "--set", "lr")
    assert (code, line) == (2, "clip4hoi test: error: --set 'lr': expected KEY=VALUE")

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(MissingFileError, match=r"^resume: no complete checkpoint in"):
        resolve_resume(run, run)
    code, line = _cli(capsys, "train", CONFIGS / "smoke.yaml", "--resume", run,
                      "--output-dir", tmp_path / "out")
    assert code == 2 and f"error: --resume: no complete checkpoint in {run}" in line


def test_debug_traceback_names_the_flag(tmp_path: Path) -> None:
    """``--debug`` re-raises the error worded for the command line."""
    with pytest.raises(InputError, match=r"^--train and --test must be"):
        main(["--debug", "make-synthetic", str(tmp_path / "data"), "--train", "0"])


def test_a_reason_in_each_users_words() -> None:
    """What the library prints or returns about a choice names the option the same way."""
    _, reason = resolve_precision("fp32", "cpu")
    assert worded(reason) == "fp32: precision fp32"
    assert describe_precision(reason, "fp32") == "precision fp32 (precision fp32)"
    assert describe_precision(reason, "fp32", flag) == "precision fp32 (--precision fp32)"


def test_errors_keep_their_settings_across_processes() -> None:
    """A library error pickled to another process (a worker's, a rank's) is still worded
    by the command line as flags."""
    import pickle

    for error in (InputError("{resume}: no checkpoint in {output_dir}"),
                  MissingFileError("{classes} x.txt: no such file"),
                  OptionError("top_k", -1, "must be >= 0 (see {min_score})")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.worded(flag) == error.worded(flag) and "--" in copy.worded(flag)

