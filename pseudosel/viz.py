"""Deprecated alias (warns once): the plots lives in :mod:`pseudosel.tools.plots`."""

from pseudosel._deprecation import moved_module

moved_module("pseudosel.viz", "pseudosel.tools.plots", globals())
