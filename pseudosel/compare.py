"""Deprecated alias (warns once): ``pseudosel compare`` lives in :mod:`pseudosel.tools.compare`."""

from pseudosel._deprecation import moved_module

moved_module(
    "pseudosel.compare", "pseudosel.tools.compare", globals(), {"make_selector": "make_runner"}
)
