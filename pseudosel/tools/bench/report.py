"""The results of ``pseudosel bench``: rows, the report, the targets, markdown and files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pseudosel.tools.bench.sizes import parse_size

__all__ = ["FLOOR", "MAX_ROW", "READ_ROW", "SCHEMA", "Report", "Row", "markdown", "save", "targets"]

SCHEMA = "pseudosel-bench/2"
FLOOR = "floor: probs.amax(dim=1)"
MAX_ROW = "probs.max(dim=1) (the line users replace)"
READ_ROW = "read: probs.sum()"


@dataclass
class Row:
    """One timed kernel on one input. ``read_share``: achieved GB/s over the GB/s of
    ``probs.sum()`` on the same input. The ``busy_*`` fields exist in ``--busy`` runs:
    median ms beside the load (all threads, and one thread) and the slowdown over idle."""

    shape: list[int]
    dtype: str
    kernel: str
    median_ms: float
    ratio_to_floor: float
    gb_per_s: float
    read_share: float
    peak_extra_bytes: int | None
    peak_extra_ratio: float | None
    checked: bool | None = None
    busy_ms: float | None = None
    busy_one_thread_ms: float | None = None
    slowdown: float | None = None
    note: str = ""


@dataclass
class Report:
    schema: str
    date: str
    device: str
    machine: str
    torch: str
    python: str
    repeats: int
    quick: bool
    command: str
    busy: bool = False
    allocator: str = ""
    rows: list[Row] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)


def _find(report: Report, shape: str, kernel: str, dtype: str = "float32") -> Row | None:
    wanted = list(parse_size(shape))
    for row in report.rows:
        if row.shape == wanted and row.kernel == kernel and row.dtype == dtype:
            return row
    return None


DENSE_SIZES = ("8x21x321x321", "64x21x32x32")
#: the GPU targets (issue #28): at this size, each variant's share of the copy bandwidth
GPU_SIZE = "16x21x512x512"
GPU_COPY_SHARE = {"csl": 0.6, "threshold": 0.8}
COPY_ROW = "copy (read + write)"
CLASSIFICATION_SIZES = ("448x10", "448x100", "256x1000")
ADAPTIVE_STEPS = (
    "flexmatch step (per-sample)",
    "flexmatch step (class-wise)",
    "freematch step",
    "freematch step (quantile)",
    "softmatch step",
    "softmatch step (per class)",
    "dash step",
    "u2pl entropy split step",
    "distribution alignment step",
    "adamatch",
)


def targets(report: Report) -> list[dict]:
    """The CPU performance targets (the "target" tables of benchmarks/RESULTS.md), evaluated
    on whatever rows this report has (float32).

    Ratios are to the floor ``probs.amax(dim=1)`` of the same run."""
    checks = []

    def add(name: str, value: float | None, limit: float, at_most: bool = True) -> None:
        if value is None:
            return
        met = value <= limit if at_most else value >= limit
        checks.append(
            {"name": name, "value": value, "limit": limit, "at_most": at_most, "met": met}
        )

    def ratio(shape: str, kernel: str) -> float | None:
        row = _find(report, shape, kernel)
        return None if row is None else row.ratio_to_floor

    def speedup(shape: str) -> float | None:
        ours, theirs = _find(report, shape, "csl"), _find(report, shape, "reference-style loop")
        return None if ours is None or theirs is None else theirs.median_ms / ours.median_ms

    def validate_cost(shape: str, kernel: str) -> float | None:
        plain, checked = ratio(shape, kernel), ratio(shape, f"{kernel}, validate=True")
        return None if plain is None or checked is None else checked - plain

    for shape in DENSE_SIZES:
        add(f"csl compiled at {shape}, x floor", ratio(shape, "csl, compiled"), 1.5)
        add(f"csl eager at {shape}, x floor", ratio(shape, "csl"), 5.0)
        add(f"threshold compiled at {shape}, x floor", ratio(shape, "threshold, compiled"), 1.2)
        add(f"threshold eager at {shape}, x floor", ratio(shape, "threshold"), 2.0)
        for step in ADAPTIVE_STEPS:
            add(f"{step} eager at {shape}, x floor", ratio(shape, step), 5.0)
        for kernel in ("csl", "threshold"):
            add(
                f"{kernel} validate=True extra at {shape}, x floor",
                validate_cost(shape, kernel),
                1.0,
            )
        peak = _find(report, shape, "csl")
        add(
            f"csl eager peak extra memory at {shape}, x input",
            None if peak is None else peak.peak_extra_ratio,
            0.5,
        )
        add(
            f"csl eager speed-up over the reference-style loop at {shape}",
            speedup(shape),
            10.0,
            at_most=False,
        )
    if report.device != "cpu":  # the GPU targets: a share of the copy's bandwidth
        copy = _find(report, GPU_SIZE, COPY_ROW)
        for kernel, share in GPU_COPY_SHARE.items():
            for variant in ("", ", compiled", ", triton"):
                row = _find(report, GPU_SIZE, kernel + variant)
                if copy is not None and row is not None:
                    add(
                        f"GPU: {kernel}{variant} at {GPU_SIZE}, share of copy bandwidth",
                        copy.median_ms / row.median_ms,
                        share,
                        at_most=False,
                    )
    for shape in CLASSIFICATION_SIZES:
        add(f"csl eager at {shape}, x floor", ratio(shape, "csl"), 30.0)
        add(f"threshold eager at {shape}, x floor", ratio(shape, "threshold"), 3.0)
    if report.busy:
        floors = {
            (tuple(r.shape), r.dtype): r for r in report.rows if r.kernel == FLOOR and r.slowdown
        }
        for row in report.rows:
            floor = floors.get((tuple(row.shape), row.dtype))
            if row.dtype != "float32" or floor is None or row.kernel in (FLOOR, READ_ROW):
                continue
            shape = "x".join(map(str, row.shape))
            add(
                f"busy: {row.kernel} at {shape}, slowdown / floor's slowdown",
                row.slowdown / floor.slowdown,
                1.5,
            )
            add(
                f"busy: {row.kernel} at {shape}, all threads / one thread",
                row.busy_ms / row.busy_one_thread_ms,
                1.0,
            )
    return checks


def markdown(report: Report) -> str:
    """The report as markdown: a header line, the table, the targets."""
    lines = [
        f"{report.date} · {report.device} · {report.machine} · torch {report.torch} · "
        f"median of {report.repeats} · allocator: {report.allocator or 'default'}"
        + (" · quick" if report.quick else ""),
        "",
    ]
    header = (
        "| shape | dtype | kernel | median ms | x floor | GB/s | x read GB/s | "
        "peak extra MB | x input |"
    )
    rule = "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if report.busy:
        header += " busy ms | slowdown | floor's slowdown | busy, 1 thread ms |"
        rule += " ---: | ---: | ---: | ---: |"
    lines += [header, rule]
    floors = {(tuple(r.shape), r.dtype): r for r in report.rows if r.kernel == FLOOR}
    for row in report.rows:
        shape = "x".join(map(str, row.shape))
        peak_mb = "" if row.peak_extra_bytes is None else f"{row.peak_extra_bytes / 1e6:.1f}"
        peak_ratio = "" if row.peak_extra_ratio is None else f"{row.peak_extra_ratio:.2f}"
        kernel = row.kernel + (" (checked)" if row.checked else "")
        line = (
            f"| {shape} | {row.dtype} | {kernel} | {row.median_ms:.3f} | "
            f"{row.ratio_to_floor:.2f} | {row.gb_per_s:.1f} | {row.read_share:.2f} | "
            f"{peak_mb} | {peak_ratio} |"
        )
        if report.busy and row.busy_ms is not None:
            floor = floors[(tuple(row.shape), row.dtype)]
            line += (
                f" {row.busy_ms:.3f} | {row.slowdown:.2f} | {floor.slowdown:.2f} | "
                f"{row.busy_one_thread_ms:.3f} |"
            )
        lines.append(line)
    if report.targets:
        lines += ["", "| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
        for target in report.targets:
            sign = "<=" if target["at_most"] else ">="
            lines.append(
                f"| {target['name']} | {target['value']:.2f} | {sign} {target['limit']} | "
                f"{'yes' if target['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def save(report: Report, out: Path) -> tuple[Path, Path]:
    """Write ``bench_selection.json`` and ``bench_selection.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench_selection.json", out / "bench_selection.md"
    json_path.write_text(json.dumps(asdict(report), indent=2))
    md_path.write_text(markdown(report))
    return json_path, md_path
