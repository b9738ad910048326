"""Helpers both command lines share: the parser with --version, its subcommands, JSON output
and its documented keys, argument types."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import orjson

from shared.version import project_version


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A command line's top-level parser, with the project's `--version`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"taostake {project_version()}")
    return parser


# Characters JSON may carry raw that a terminal would act on or show out of order: DEL and
# the C1 controls (U+009B starts an escape sequence like ESC [), line and paragraph
# separators, and the bidirectional overrides and isolates. orjson escapes only U+0000-U+001F.
_TERMINAL_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def print_json(value: Any) -> None:
    """One JSON document on one line of stdout (JSON lines when repeated, e.g. `--watch`),
    every character a terminal could act on escaped as \\uXXXX (the same JSON)."""
    out = orjson.dumps(value, default=str).decode()
    out = _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)
    sys.stdout.write(out + "\n")
    sys.stdout.flush()


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a one-paragraph description; keeps the lines of a text that has its own line
    breaks (the --json key tables of json_help)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command_group(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A subcommand made of actions (`tokens create`, `dead-letter list`): `help` is its line
    in the parent's --help, `description` opens its own. Returns the subparsers to add the
    actions to; one must be given, and the chosen one is `args.action`."""
    group = commands.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")


def json_help(shape: str, keys: Mapping[str, str]) -> str:
    """An epilog documenting a --json output: its shape, then one line per key (use with
    HelpFormatter)."""
    width = max(len(k) for k in keys)
    lines = textwrap.wrap(f"--json prints {shape}:", width=78)
    lines += [f"  {key.ljust(width)}  {meaning}" for key, meaning in keys.items()]
    return "\n".join(lines)


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port
