"""Tab completion for every subcommand. The shell script is Hydra's (`windtunnel -sc install=bash`, also zsh): on a
TAB it runs `windtunnel -sc query=bash` with COMP_LINE and COMP_POINT set and offers what that prints. Here that
query is answered from the argparse parser itself: subcommand names, each subcommand's options, the choices of an
option that has them; the overrides of `sweep`, `train` and `resolution` are Hydra's (config groups and keys), so
those are handed to Hydra's own completion. Nothing printed (a path argument) leaves the shell's file completion."""
import argparse
import os
import re
from typing import Optional

OVERRIDE_COMMANDS = ("sweep", "train", "resolution")  # their positional words are Hydra overrides


def candidates(parser: argparse.ArgumentParser, line: str) -> Optional[list[str]]:
    """What to offer for the last word of `line` (the command line up to the cursor), or None when Hydra answers:
    an override of sweep / train / resolution. parser: the `windtunnel` parser with its subparsers added."""
    words = line.split()
    current = "" if not words or line[-1:].isspace() else words.pop()
    words = [w for w in words[1:] if w not in ("-q", "--quiet", "-v", "--verbose")]  # the program name, global flags
    commands = _subparsers(parser)
    if not words:  # the subcommand itself
        found = [*commands, "--help", "--version", "--quiet", "--verbose"]
        return [c for c in found if c.startswith(current)]
    command = words[0]
    sub = commands.get(command)
    if sub is None:
        return []
    options = {s: a for a in sub._actions for s in a.option_strings}
    before = options.get(words[-1]) if len(words) > 1 else None
    if before is not None and before.nargs != 0 and not current.startswith("-"):  # the value of an option
        return [str(c) for c in before.choices or () if str(c).startswith(current)]
    if current.startswith("-"):
        return sorted(s for s in options if s.startswith(current) and s.startswith("--"))
    if command in OVERRIDE_COMMANDS:
        return None
    return []  # a path: the shell's file completion


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def answer(parser: argparse.ArgumentParser, argv: list[str]) -> Optional[list[str]]:
    """For `windtunnel -sc ...`: `query=bash` (or zsh, which runs bash's script) answered here -> the words to print;
    None hands argv to Hydra (its install scripts, and override completion, with the subcommand taken out of
    COMP_LINE: Hydra completes the overrides of one app)."""
    if not any(a.startswith("query=") for a in argv) or "COMP_LINE" not in os.environ:
        return None
    line = os.environ["COMP_LINE"]
    point = os.environ.get("COMP_POINT", "")
    line = line[:int(point)] if point.isdigit() else line
    found = candidates(parser, line)
    if found is None:
        command = "|".join(OVERRIDE_COMMANDS)
        os.environ["COMP_LINE"] = re.sub(rf"^(\s*\S+)((?:\s+-[qv]|\s+--quiet|\s+--verbose)*)\s+({command})\b", r"\1", line)
        os.environ["COMP_POINT"] = str(len(os.environ["COMP_LINE"]))
    return found
