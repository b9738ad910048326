"""What a command line leaves without help text: every subcommand and every option."""

from __future__ import annotations

import argparse


def undocumented(parser: argparse.ArgumentParser, path: str = "") -> list[str]:
    """`path option` for each argument, and `path command` for each subcommand, that has no
    help text, walking every subcommand's parser."""
    missing: list[str] = []
    prog = path or parser.prog
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            documented = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not documented.get(name):
                    missing.append(f"{prog} {name}")
                missing += undocumented(sub, f"{prog} {name}")
            continue
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return missing
