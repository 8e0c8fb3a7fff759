"""The command line's help is plain text: no reST or Markdown markup reaches a terminal."""

from __future__ import annotations

import re

import pytest

from pseudosel.tools.cli import main

# reST literals and roles, Markdown code spans, emphasis and links, leftover HTML
MARKUP = re.compile(r"``|`|:[a-z]+:`|\*\*|(?<!\w)\*\w[^*\n]*\*(?!\w)|\]\(|</?[a-z]+>")


@pytest.mark.parametrize("command", [[], ["compare"], ["bench"]], ids=["main", "compare", "bench"])
def test_help_is_plain_text(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: pseudosel")
    found = [line for line in text.splitlines() if MARKUP.search(line)]
    assert not found, f"markup in `pseudosel {' '.join(command)} --help`: {found}"
    assert all(line.isascii() for line in text.splitlines()), "help is plain ASCII"


def test_main_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "pseudosel compare PREDICTIONS" in text and "pseudosel bench" in text
    assert "python -m pseudosel" in text


def test_version(capsys):
    import pseudosel

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"pseudosel {pseudosel.__version__}"
