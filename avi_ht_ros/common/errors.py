"""Errors the core raises for bad input, each naming the file or parameter at fault."""
from __future__ import annotations


class AviHtError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AviHtError):
    """A configuration file or parameter is missing, malformed or out of range.

    The message always starts with the file path or parameter name, so a user
    can fix it without reading a traceback.
    """

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem

    def __reduce__(self):  # picklable, so it crosses process boundaries (multiprocessing workers)
        return (type(self), (self.where, self.problem))
