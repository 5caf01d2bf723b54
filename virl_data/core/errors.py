"""User-facing errors. The CLI prints their message on one line and exits with code 2; anything else is a bug and
keeps its traceback."""

from __future__ import annotations


class VirlError(Exception):
    """Base class for errors caused by user input (files, options, configs), not by virl itself."""


class CorpusReadError(VirlError):
    """A corpus file cannot be read: missing, malformed, truncated, or not a corpus."""


class SchemaVersionError(CorpusReadError):
    """A corpus file was written with another schema version; the message names the file, the version and the fix."""


class SchemaMismatchError(CorpusReadError):
    """A corpus file lacks columns or has columns of the wrong type; the message names them."""


class ConfigError(VirlError):
    """A configuration (YAML, options, expressions) is invalid; the message names the offending key or value."""


class OutputExistsError(ConfigError):
    """An output folder holds something virl will not overwrite (without ``--overwrite``, or not virl's own)."""


class BoxConventionError(VirlError):
    """A box in an external convention cannot be converted (wrong length, non-finite values, missing image size)."""


class WrongFileKind(CorpusReadError):
    """An input file is of another kind than the one expected (e.g. GQA scene graphs given as questions, two inputs
    swapped); the message names what the file looks like and what was expected."""


class DependencyError(VirlError):
    """An optional component virl talks to is missing or broken (e.g. FiftyOne's database); the message says what to
    install or run."""


class PathClashError(ConfigError):
    """An output path of a command is one of its inputs, or another of its outputs (resolved, symlinks followed):
    writing it would destroy what the command reads or what it has just written. The message names both."""


class EmptyInputError(VirlError):
    """An input holds nothing to work on (no records, no episodes); the message names the file. An existing output is
    left as it was."""
