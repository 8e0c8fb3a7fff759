"""Deprecated alias (warns once): the engine of ``pseudosel bench`` lives in
:mod:`pseudosel.tools.bench`."""

from pseudosel._deprecation import moved_module

moved_module("pseudosel.benchmark", "pseudosel.tools.bench", globals())
