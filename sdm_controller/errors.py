"""Errors whose message is meant for the person running a command.

The command-line entry point prints these as one line and exits with status 2 instead of
showing a traceback: they describe bad input (a file, a key, a setting), not a bug.
"""


class SdmError(Exception):
    """Base class: the message names what was wrong and what was expected."""


class ConfigError(SdmError):
    """A setting that cannot work (negative learning rate, unknown preset, ...)."""


class DatasetError(SdmError):
    """A dataset that is missing, corrupt, or lacks the keys a config needs."""


class ArtifactError(SdmError):
    """A policy artifact that is missing, corrupt, or inconsistent with its weights."""


class TaskError(SdmError):
    """An unknown simulation task name."""
