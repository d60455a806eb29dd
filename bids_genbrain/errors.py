"""Errors that reach the user as one line (exit code 2), never as a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (dataset, option, file): the message names the file and the fix."""
