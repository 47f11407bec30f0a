"""The README's set-up commands stay true."""

from __future__ import annotations

import re

from conftest import REPO


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README has no bash block near the top"
    return [line for line in block.group(1).splitlines()
            if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    detect, tests = _commands()
    assert "clip4hoi detect" in detect
    assert "pytest" in tests
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_readme_main_command_parses() -> None:
    from clip4hoi.cli import build_parser

    detect, _ = _commands()
    argv = detect.split("clip4hoi ", 1)[1]
    args = build_parser().parse_args([t.strip('"') for t in re.findall(r'"[^"]*"|\S+', argv)])
    assert args.command == "detect"
