"""Deprecated alias (warns once): the command line lives in :mod:`pseudosel.tools.cli`."""

from pseudosel._deprecation import moved_module

moved_module("pseudosel.cli", "pseudosel.tools.cli", globals())
