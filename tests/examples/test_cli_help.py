"""Every command-line option of the examples, benchmarks and docs scripts has help text."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from argparse import SUPPRESS
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every script with a command line: its module name (a path for the docs script).
COMMANDS = [
    "benchmarks.accuracy",
    "benchmarks.aggregators",
    "benchmarks.device",
    "benchmarks.eager",
    "benchmarks.mtl.run",
    "benchmarks.product_precision",
    "benchmarks.scaling",
    "benchmarks.sharding",
    "benchmarks.stage1_iterations",
    "benchmarks.train_step",
    "docs/check_pages.py",
    "examples.docs_figures",
    "examples.frameworks.common",
    "examples.rrg.demo",
    "examples.rrg.plots",
    "examples.rrg.synthetic",
    "examples.rrg.train",
    "examples.toy.demo",
]


class _Parsed(Exception):
    """Raised instead of parsing, carrying the parser a command built."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def _module(command: str):
    if not command.endswith(".py"):
        return importlib.import_module(command)
    spec = importlib.util.spec_from_file_location(Path(command).stem, ROOT / command)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser that ``main`` of ``command`` builds, caught before it parses anything."""

    def catch(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    module = _module(command)
    with pytest.raises(_Parsed) as caught:
        if command == "examples.frameworks.common":  # the framework examples' shared main
            module.main(lambda steps: None, "a framework example", [])
        module.main([])
    return caught.value.parser


def test_every_command_line_is_listed():
    """A new script that uses argparse is added to COMMANDS (and so checked)."""
    found = set()
    for folder in ("benchmarks", "examples", "docs"):
        for path in (ROOT / folder).rglob("*.py"):
            if "ArgumentParser(" in path.read_text(encoding="utf-8"):
                rel = path.relative_to(ROOT)
                found.add(str(rel) if folder == "docs" else ".".join(rel.with_suffix("").parts))
    assert found == set(COMMANDS)


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """The options (and positionals) of ``parser``, -h aside, whose help is empty or hidden."""
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and (not (isinstance(action.help, str) and action.help.strip()) or action.help == SUPPRESS)
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    assert len(parser._actions) > 1, f"{command}: no options found"
    missing = undocumented(parser)
    assert not missing, f"{command}: options without help text: {missing}"
    assert parser.description, f"{command}: the parser has no description"


def test_undocumented_finds_bare_and_blank_options():
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--documented", help="has help")
    parser.add_argument("--bare")
    parser.add_argument("--blank", help="  ")
    parser.add_argument("--hidden", help=SUPPRESS)
    assert undocumented(parser) == ["path", "--bare", "--blank", "--hidden"]
