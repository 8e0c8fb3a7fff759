"""MkDocs hook: the documentation's table of selectors, generated from the registry.

A page that holds the line ``<!-- pseudosel:selectors -->`` gets, in its place, one row per
registered selector (``pseudosel.available_selectors()``): name, functional selector or
module, state, what it needs besides the probabilities, which outputs it takes, and its
summary and source — so the table can never disagree with the code.
"""

from __future__ import annotations

MARKER = "<!-- pseudosel:selectors -->"


def selector_table() -> str:
    """The markdown table of every registered selector."""
    import pseudosel
    from pseudosel.registry import selector_spec

    lines = [
        "| name | function / module | state | needs | outputs | what it does | source |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in pseudosel.available_selectors():
        spec = selector_spec(name)
        callables = []
        if spec.function is not None:
            callables.append(f"`{spec.function.__module__}.{spec.function.__name__}`")
        if spec.module is not None:
            callables.append(f"`{spec.module.__module__}.{spec.module.__name__}`")
        layouts = [
            kind for kind, ok in (("dense", spec.dense), ("(N, K)", spec.classification)) if ok
        ]
        outputs = ", ".join(sorted(spec.inputs)) + f"; {' and '.join(layouts)}"
        lines.append(
            f"| `{name}` | {'<br>'.join(callables)} | {'yes' if spec.stateful else 'no'} "
            f"| {', '.join(sorted(spec.needs)) or '-'} | {outputs} | {spec.summary} "
            f"| {spec.source} |"
        )
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: object) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, selector_table())
