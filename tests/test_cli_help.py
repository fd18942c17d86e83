"""What users read never sends them to SPEC.md, which they do not have: no ``--help`` text and no
string of the package other than a docstring cites it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import rashomon
from rashomon.engine.cli import main

COMMANDS = [[], ["run"], ["tune"], ["status"], ["analyze"], ["report"], ["flatness"], ["datasets"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "rashomon")
def test_help_texts_cite_no_spec(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: rashomon")
    assert "SPEC" not in text and "§" not in text


def test_the_main_help_lists_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 done; 1 some models failed, or the run stopped early" in text
    assert "2 a mistake in the job, the arguments or the files" in text
    assert "130 / 143 stopped by Ctrl-C / SIGTERM" in text


def package_files() -> list[Path]:
    root = Path(rashomon.__file__).parent  # its subpackages are links: follow them
    files = [Path(d, f) for d, _, names in os.walk(root, followlinks=True) for f in names]
    return [f for f in files if f.suffix == ".py"]


def strings_users_may_see(tree: ast.AST) -> list[str]:
    """Every string constant but docstrings (messages, help texts, report text)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_no_string_of_the_package_cites_the_spec():
    files = package_files()
    assert {"cli.py", "_tune.py", "_analyze.py", "_sections.py"} <= {f.name for f in files}
    cited = [
        (str(path), text)
        for path in files
        for text in strings_users_may_see(ast.parse(path.read_text(encoding="utf-8")))
        if "SPEC" in text or "§" in text
    ]
    assert not cited
