"""The GPU checks of benchmarks/gpu.sh that are not tests: CUDA-graph capture of every
selector's training step, torch.compile == eager on the device, and the results section.

Every selector comes from the registry (``available_selectors``, ``selector_spec``):

- ``graphs``: one training step of each selector (its module built by the registry, or its
  function for a stateless selector without one; every declared layout) captured in a CUDA
  graph after three warm-up steps on a side stream, replayed once and compared with the same
  step run eagerly on a copy of the module. Capture fails on any host synchronisation
  (``.item()``, ``nonzero``, a host-to-device copy), so "captured" is the no-host-sync
  target. Stateless selectors that take ``backend=`` are also captured with
  ``backend="triton"``.
- ``compile``: ``torch.compile(fullgraph=True)`` of each stateless function and of each
  stateful module's step, against eager, on the device.
- ``results``: the bench report (``pseudosel bench``'s JSON), the two tables above and the
  test summary as one markdown section, written to a file and inserted into
  benchmarks/RESULTS.md (newest first).

On a machine without CUDA, ``--device cpu`` runs the same code eagerly with tiny sizes and
no capture (``captured`` is then "not attempted"): what tests/tools/test_gpu_script.py runs
so that this script is not dead code.

Usage (from the repository root; the project on PYTHONPATH or installed)::

    python benchmarks/gpu_checks.py graphs --out results/gpu
    python benchmarks/gpu_checks.py compile --out results/gpu
    python benchmarks/gpu_checks.py results --out results/gpu --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path
from typing import Any

import torch

from pseudosel.registry import SelectorSpec, available_selectors, selector_spec
from pseudosel.tools.bench.sizes import make_probs
from pseudosel.tools.modules import build_module, takes_argument

NUM_CLASSES = 10
NUM_UNLABELED = 1000


def _shapes(device: torch.device) -> dict[str, tuple[int, ...]]:
    """The inputs of one step per layout: small on the CPU, a real batch on a GPU."""
    if device.type == "cuda":
        return {"dense": (4, NUM_CLASSES, 64, 64), "classification": (448, NUM_CLASSES)}
    return {"dense": (2, NUM_CLASSES, 6, 6), "classification": (32, NUM_CLASSES)}


def _variants(spec: SelectorSpec, device: torch.device) -> list[tuple[str, dict[str, Any]]]:
    """(label, options): the declared "default" example, plus backend="triton" on CUDA."""
    options = dict(spec.examples.get("default", next(iter(spec.examples.values()))))
    variants = [("default", options)]
    names = spec.option_names() or ()
    if not spec.stateful and "backend" in names and device.type == "cuda":
        from pseudosel.kernels import triton as triton_kernels

        if triton_kernels.unavailable_reason(device) is None:
            variants.append(("backend=triton", {**options, "backend": "triton"}))
    return variants


def _step_of(spec: SelectorSpec, options: dict[str, Any], probs: torch.Tensor):
    """A zero-argument training step of ``spec`` on ``probs`` and the module it updates
    (None for a function), built as the registry says."""
    dense = probs.dim() > 2
    inputs: dict[str, Any] = {}
    options = dict(options)
    if "index" in spec.needs and not dense:
        inputs["index"] = torch.randperm(NUM_UNLABELED, device=probs.device)[: probs.shape[0]]
    if "labeled" in spec.needs:
        inputs["probs_labeled"] = probs[: max(1, probs.shape[0] // 7)]
    if spec.stateful or spec.function is None:
        num_unlabeled = NUM_UNLABELED if "index" in inputs else None
        if takes_argument(spec.module, "validate"):
            options["validate"] = True  # a training step checks its input
        module = build_module(spec, probs.shape[1], num_unlabeled, options).to(probs.device)
        return module, inputs
    return None, inputs


def _run_step(spec, module, probs, inputs, options):
    """One training step, its value check on (validate=True, the default)."""
    if module is None:
        return spec.function(probs, **inputs, **options)
    return spec.step(module, probs, None, **inputs)


def _fields(selection) -> dict[str, torch.Tensor]:
    names = getattr(selection, "_fields", None)
    if names is None:
        return {"output": selection}
    return {name: getattr(selection, name) for name in names}


def _difference(a, b) -> float:
    """The largest absolute difference between two selections' float fields (bool and
    integer fields: the share of entries that differ)."""
    worst = 0.0
    for name, x in _fields(a).items():
        y = _fields(b)[name]
        if not isinstance(x, torch.Tensor):
            continue
        if x.is_floating_point():
            finite = torch.isfinite(x) & torch.isfinite(y)
            diff = (x - y).abs()[finite]
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        else:
            worst = max(worst, float((x != y).float().mean()) if x.numel() else 0.0)
    return worst


def _selectors(shard: tuple[int, int] = (0, 1)) -> list[SelectorSpec]:
    """The registered selectors (less those needing cvxpy), every ``count``-th from ``index``."""
    index, count = shard
    specs = [selector_spec(name) for name in available_selectors()]
    return [spec for spec in specs if not spec.requires][index::count]


def _layouts(spec: SelectorSpec, device: torch.device) -> list[tuple[str, tuple[int, ...]]]:
    """The (layout, shape) pairs of :func:`_shapes` that ``spec`` takes."""
    return [
        (layout, shape)
        for layout, shape in _shapes(device).items()
        if (spec.dense if layout == "dense" else spec.classification)
    ]


def _record(rows: list, row: dict[str, Any], check, failed: str, save) -> None:
    """Run ``check()`` into ``row`` and time it; an exception is recorded as ``failed: "no"``
    with its message, not raised (every selector is tried); then print the row, append it
    to ``rows`` and call ``save(rows)``."""
    start = time.perf_counter()
    try:
        row.update(check())
    except Exception as error:
        row.update({failed: "no", "error": _short(error)})
    row["seconds"] = round(time.perf_counter() - start, 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
    if save is not None:
        save(rows)


def check_graphs(device: torch.device, shard=(0, 1), save=None) -> list[dict[str, Any]]:
    """CUDA-graph capture of every selector's training step (module docstring); ``save``
    is called with the rows so far after each one (a stage cut off keeps its rows)."""
    rows: list[dict[str, Any]] = []
    for spec in _selectors(shard):
        for label, options in _variants(spec, device):
            for layout, shape in _layouts(spec, device):
                row = {"selector": spec.name, "options": label, "layout": layout}
                check = functools.partial(_capture_one, spec, options, device, shape)
                _record(rows, row, check, "captured", save)
    return rows


def _capture_one(spec, options, device, shape) -> dict[str, Any]:
    probs = make_probs(shape, torch.float32, device)
    module, inputs = _step_of(spec, options, probs)
    if device.type != "cuda":  # the dry run: the same steps, eagerly
        for _ in range(2):
            _run_step(spec, module, probs, inputs, options)
        return {"captured": "not attempted (no CUDA)", "replay_vs_eager": None}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            _run_step(spec, module, probs, inputs, options)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    twin = copy.deepcopy(module)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _run_step(spec, module, probs, inputs, options)
    graph.replay()
    torch.cuda.synchronize()
    eager = _run_step(spec, twin, probs, inputs, options)
    torch.cuda.synchronize()
    return {"captured": "yes", "replay_vs_eager": _difference(captured, eager)}


def check_compile(device: torch.device, shard=(0, 1), save=None) -> list[dict[str, Any]]:
    """torch.compile(fullgraph=True) of every selector's step against eager; ``save`` as
    in :func:`check_graphs`."""
    rows: list[dict[str, Any]] = []
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for spec in _selectors(shard):
        options = dict(spec.examples.get("default", next(iter(spec.examples.values()))))
        for layout, shape in _layouts(spec, device):
            row = {"selector": spec.name, "layout": layout}
            check = functools.partial(_compile_one, spec, options, device, shape)
            _record(rows, row, check, "compiled", save)
    return rows


def _compile_one(spec, options, device, shape) -> dict[str, Any]:
    probs = make_probs(shape, torch.float32, device)
    module, inputs = _step_of(spec, options, probs)
    torch._dynamo.reset()
    if module is None:
        fast = torch.compile(spec.function, fullgraph=True)
        compiled = fast(probs, validate=False, **inputs, **options)
        eager = spec.function(probs, validate=False, **inputs, **options)
    else:
        twin = copy.deepcopy(module)
        fast = torch.compile(module, fullgraph=True)  # its forward; a train_step calls it
        compiled = spec.step(fast, probs, None, **inputs)
        eager = spec.step(twin, probs, None, **inputs)
    difference = _difference(compiled, eager)
    return {"compiled": "yes", "compiled_vs_eager": difference}


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    where = traceback.extract_tb(error.__traceback__)[-1:]
    place = f" ({where[0].filename.split('/')[-1]}:{where[0].lineno})" if where else ""
    return (text[:300] + place).replace("|", "/")


# ------------------------------------------------------------------------------ results


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, float):
                value = f"{value:.3g}"
            cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_section(out: Path, device_name: str) -> str:
    """The markdown section of one GPU run, from what the stages wrote into ``out``."""
    today = date.today().isoformat()
    lines = [f"## {today} — the one-shot GPU run (benchmarks/gpu.sh) on {device_name}", ""]
    env = out / "environment.txt"
    if env.exists():
        lines += ["```", env.read_text().strip(), "```", ""]
    tests = out / "tests_summary.txt"
    if tests.exists():
        summary = tests.read_text().strip().splitlines() or ["(no summary line: see tests.log)"]
        lines += ["Test suite on CUDA: " + summary[-1], ""]
    graphs = _rows(out, "graphs")
    if graphs:
        rows = graphs
        ok = sum(row["captured"] == "yes" for row in rows)
        lines += [f"CUDA-graph capture of the training steps: {ok} of {len(rows)} captured.", ""]
        lines += _table(
            rows, ["selector", "options", "layout", "captured", "replay_vs_eager", "error"]
        )
        lines.append("")
    compiled = _rows(out, "compile")
    if compiled:
        rows = compiled
        ok = sum(row["compiled"] == "yes" for row in rows)
        lines += [f"torch.compile(fullgraph=True) == eager: {ok} of {len(rows)} compiled.", ""]
        lines += _table(rows, ["selector", "layout", "compiled", "compiled_vs_eager", "error"])
        lines.append("")
    bench = out / "bench" / "bench_selection.md"
    if bench.exists():
        lines += ["`pseudosel bench` (float32; x floor is the ratio to amax(dim=1)):", ""]
        lines += [bench.read_text().strip(), ""]
    fastest = measured_fastest(out / "bench" / "bench_selection.json")
    if fastest:
        lines += [
            "The fastest path per selector at 16x21x512x512 (float32), for "
            f"`pseudosel.kernels.MEASURED_FASTEST`: `{fastest!r}`.",
            "",
        ]
    missing = [name for name, found in (("tests", tests.exists()), ("graphs", graphs),
                                        ("compile", compiled)) if not found]  # fmt: skip
    if missing or not bench.exists():
        lines += [f"Stages without results (timed out or failed; see the logs): "
                  f"{', '.join(missing + ([] if bench.exists() else ['bench']))}.", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def measured_fastest(bench_json: Path, shape: str = "16x21x512x512") -> dict[str, str]:
    """{selector: "eager" | "compiled" | "triton"}: the fastest ``backend=`` per selector at
    ``shape`` (float32) in a ``pseudosel bench`` report, what ``backend="auto"`` should pick."""
    if not bench_json.exists():
        return {}
    rows = json.loads(bench_json.read_text())["rows"]
    wanted = [int(part) for part in shape.split("x")]
    times = {
        row["kernel"]: row["median_ms"]
        for row in rows
        if row["shape"] == wanted and row["dtype"] == "float32"
    }
    fastest = {}
    for selector in sorted({kernel.split(",")[0] for kernel in times}):
        paths = {"eager": selector, "compiled": f"{selector}, compiled",
                 "triton": f"{selector}, triton"}  # fmt: skip
        timed = {path: times[row] for path, row in paths.items() if row in times}
        if len(timed) > 1:
            fastest[selector] = min(timed, key=timed.get)
    return fastest


def _rows(out: Path, stage: str) -> list[dict[str, Any]]:
    """The rows of a stage: ``<stage>.json`` and its shards ``<stage>-<i>.json``."""
    rows = []
    for path in sorted(out.glob(f"{stage}*.json")):
        rows += json.loads(path.read_text())
    return rows


def insert_section(results: Path, section: str) -> None:
    """Insert ``section`` before the first ``## `` heading of ``results`` (newest first)."""
    text = results.read_text() if results.exists() else "# Benchmark results\n\n"
    marker = text.find("\n## ")
    if marker < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = text[: marker + 1] + section + "\n" + text[marker + 1 :]
    results.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["graphs", "compile", "results"])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument(
        "--results", type=Path, default=None, help="insert the section into this file"
    )
    parser.add_argument(
        "--shard", default="0/1", help="I/N: every N-th selector from the I-th (default 0/1)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("graphs", "compile"):
        index, count = (int(part) for part in args.shard.split("/"))
        check = check_graphs if args.stage == "graphs" else check_compile
        name = args.stage if count == 1 else f"{args.stage}-{index}"
        path = args.out / f"{name}.json"

        def save(rows: list[dict[str, Any]]) -> None:
            path.write_text(json.dumps(rows, indent=1))

        save(check(device, (index, count), save))
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    section = results_section(args.out, name)
    (args.out / "results_section.md").write_text(section)
    if args.results is not None:
        insert_section(args.results, section)
    print(section)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {platform.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
