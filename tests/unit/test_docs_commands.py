"""The commands the docs show parse against the real CLIs and the real partitions.

Every ```bash block of README.md, docs/*.md and k8s/README.md is split into commands; each
`quantbias ...` command must be accepted by the `quantbias` argument parser, each `dagster ...`
command by Dagster's own click CLI (options parsed, nothing run), and every partition key the
docs show (a `--partition` value anywhere, or an inline `method|model` key) must parse against
`model_method_partitions` into a known method and a valid model nickname.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from quantbias_assets.catalog.models import validate_nickname
from quantbias_assets.cli import build_parser
from quantbias_assets.partitions import METHODS, model_method_partitions, partition_key

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "k8s" / "README.md"]
CONTROL = {"&&", "||", ";", "|", "&"}
PROGRAMS = ("quantbias", "dagster")


def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of every ```bash block."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if current is None and line.strip() == "```bash":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def shell_commands(block: str) -> list[list[str]]:
    """Each simple command of a block (continuations joined, comments dropped), as argv."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in CONTROL:
                if argv:
                    commands.append(argv)
                argv = []
            else:
                argv.append(token)
    return commands


def program_call(argv: list[str]) -> tuple[str, list[str]] | None:
    """(program, its arguments) when argv runs quantbias or dagster, directly, after VAR=value
    assignments, from a venv's bin/, or after `--` (kubectl exec POD -- quantbias ...)."""
    words = argv[argv.index("--") + 1 :] if argv[:1] == ["kubectl"] and "--" in argv else argv
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    if words and Path(words[0]).name in PROGRAMS:
        return Path(words[0]).name, words[1:]
    return None


def documented_calls() -> list[tuple[str, str, list[str]]]:
    calls = []
    for path in DOCS:
        for start, block in bash_blocks(path):
            for argv in shell_commands(block):
                call = program_call(argv)
                if call is not None:
                    calls.append((f"{path.relative_to(REPO)}:{start}", *call))
    return calls


def documented_partition_keys() -> list[tuple[str, str]]:
    """Every `--partition` value, and every inline code span that is a concrete `a|b` key."""
    keys = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{number}"
            keys += [(where, value) for value in re.findall(r"--partition[= ]+'?([^'\s]+)'?", line)]
            keys += [(where, a + "|" + b) for a, b in re.findall(r"`([a-z0-9._-]+)\\?\|([a-z0-9._-]+)`", line)]
    return keys


def check_partition_key(text: str) -> None:
    """Parse as Dagster parses `--partition`: the key's parts map to the dimensions in name order."""
    key = model_method_partitions.get_partition_key_from_str(text)
    dimensions = key.keys_by_dimension
    if dimensions["method"] not in METHODS:
        raise ValueError(
            f"partition {text!r}: method {dimensions['method']!r} is not one of {', '.join(METHODS)} "
            "(a multi-partition key is <method>|<model>)"
        )
    validate_nickname(dimensions["model"])
    assert str(partition_key(dimensions["model"], dimensions["method"])) == text


def parse_dagster(arguments: list[str]) -> None:
    """Resolve the subcommands and parse the options with Dagster's click CLI, running nothing."""
    from dagster._cli import cli

    command: click.Command = cli
    names = ["dagster"]
    remaining = list(arguments)
    while isinstance(command, click.Group):
        name = remaining.pop(0)
        found = command.get_command(click.Context(command), name)
        if found is None:
            raise click.UsageError(f"no such command {' '.join([*names, name])!r}")
        command, names = found, [*names, name]
    command.make_context(" ".join(names), remaining)


CALLS = documented_calls()
KEYS = documented_partition_keys()


def test_the_docs_show_quantbias_dagster_commands_and_partition_keys() -> None:
    programs = {program for _, program, _ in CALLS}
    assert programs == {"quantbias", "dagster"}
    assert (
        "docs/responses.md:12",
        "dagster",
        [
            "asset",
            "materialize",
            "-m",
            "definitions",
            "--select",
            'key:"responses/*"',
            "--partition",
            "none|qwen2.5-0.5b-instruct",
        ],
    ) in CALLS
    assert len(KEYS) >= 4


@pytest.mark.parametrize(("where", "program", "arguments"), CALLS, ids=[f"{w} {p}" for w, p, _ in CALLS])
def test_documented_command_parses(where: str, program: str, arguments: list[str]) -> None:
    if program == "quantbias":
        try:
            build_parser().parse_args(arguments)
        except SystemExit as error:
            pytest.fail(f"{where}: quantbias {shlex.join(arguments)}: rejected by the argument parser ({error})")
    else:
        try:
            parse_dagster(arguments)
        except click.ClickException as error:
            pytest.fail(f"{where}: dagster {shlex.join(arguments)}: {error.format_message()}")


@pytest.mark.parametrize(("where", "key"), KEYS, ids=[f"{w} {k}" for w, k in KEYS])
def test_documented_partition_key_parses(where: str, key: str) -> None:
    try:
        check_partition_key(key)
    except Exception as error:  # noqa: BLE001 - reported with the doc line
        pytest.fail(f"{where}: {error}")


def test_the_checks_reject_what_the_docs_used_to_show() -> None:
    with pytest.raises(ValueError, match=r"method 'qwen2\.5-0\.5b-instruct' is not one of"):
        check_partition_key("qwen2.5-0.5b-instruct|none")
    with pytest.raises(ValueError, match="method 'model' is not one of"):
        check_partition_key("model|method")
    check_partition_key("none|tiny")
    with pytest.raises(click.UsageError, match="No such option '--partitions'"):
        parse_dagster(["asset", "materialize", "-m", "definitions", "--select", "x", "--partitions", "none|tiny"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["datasets", "check", "--data-folder", "x"])
    assert shell_commands(
        "A=1 .venv/bin/quantbias datasets check  # comment\nkubectl exec P -- quantbias demo && ls"
    ) == [
        ["A=1", ".venv/bin/quantbias", "datasets", "check"],
        ["kubectl", "exec", "P", "--", "quantbias", "demo"],
        ["ls"],
    ]
