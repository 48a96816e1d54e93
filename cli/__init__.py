"""The command line that every entry point shares, as t5x/gin_utils.py is t5x's.

train.main, train.sweep, data.prepare, data.clean and the scaling commands all parse their flags
with `ArgumentParser` (with gin=True: --gin_file, --gin_bindings and the shorthand --gin.a.b=v)
and their gin with `parse_gin`, and `run` turns bad input into one line on stderr and exit
status 2: no usage text, no traceback. Nothing here imports the packages it serves.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tokenize
from typing import Callable, Sequence, Union

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class InputError(ValueError):
    """Bad input: reported as one line and exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises InputError instead of printing usage, and (gin=True) takes gin files,
    bindings and --gin.a.b=v, the shorthand for --gin_bindings='a.b = v'; gin="required" also
    insists on at least one --gin_file."""

    def __init__(self, *args, gin: Union[bool, str] = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.gin, self.gin_required = bool(gin), gin == "required"
        if gin:
            self.add_argument("--gin_file", action="append", default=[], help="gin file; repeatable")
            self.add_argument("--gin_bindings", action="append", default=[],
                              help="a gin binding 'a.b = v'; repeatable")

    def error(self, message):
        raise InputError(message)

    def parse_args(self, args=None, namespace=None):
        parsed, rest = self.parse_known_args(args, namespace)
        for extra in rest:
            if not (self.gin and extra.startswith("--gin.") and "=" in extra):
                self.error(f"unrecognized argument {extra!r}")
            key, value = extra[len("--gin."):].split("=", 1)
            parsed.gin_bindings.append(f"{key} = {value}")
        if self.gin_required and not parsed.gin_file:
            self.error("at least one --gin_file is required")
        return parsed


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


def directory(text: str) -> str:
    """An argparse type: a directory to write into, new or not, but not a file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return text


def resolve_gin_file(name: str) -> str:
    for candidate in (name, os.path.join(CONFIGS_DIR, name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise InputError(f"gin file {name!r} not found (looked in the working directory and {CONFIGS_DIR})")


def parse_gin(files: Sequence[str], bindings: Sequence[str], skip_unknown: Union[bool, Sequence[str]] = False) -> None:
    """Parses gin files (looked up in the working directory, then configs/) and bindings, once the
    caller has imported its configurables. skip_unknown: see gin; a command that reads only some
    packages' configurables skips the others' bindings in shared files such as base.gin."""
    import gin

    paths = [resolve_gin_file(f) for f in files]
    gin.add_config_file_search_path(CONFIGS_DIR)
    # gin's package-resource reader logs an ERROR for every include it then finds in configs/.
    logging.getLogger().setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(paths, bindings, skip_unknown=skip_unknown)
    except (ValueError, SyntaxError, tokenize.TokenError, TypeError, KeyError, IOError) as error:
        # an unknown name or parameter, bad syntax (an unclosed bracket: TokenError), a missing include
        raise InputError(f"bad gin config: {error}") from None
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def fail(message: str) -> int:
    """One line: gin appends "In call to configurable ..." lines to the errors it passes on."""
    lines = str(message).strip().splitlines()
    print(f"error: {lines[0] if lines else 'bad input'}", file=sys.stderr)
    return 2


def run(command: Callable[[list[str]], int], argv: list[str] | None = None,
        errors: tuple = (InputError,)) -> int:
    """command(argv) -> exit status, with InputError (or the other `errors` that mean bad input to
    this command) as one line and status 2."""
    try:
        return command(sys.argv[1:] if argv is None else argv)
    except errors as error:
        return fail(str(error))
