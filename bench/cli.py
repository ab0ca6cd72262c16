"""`python -m bench [--runs N] [--smoke]`: run every scenario N times on the real stack and print
each figure as the median of the runs, beside its target."""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from bench import dashboard, export, fairness, scenarios, suppressions, uploads
from bench.receiver import Receiver
from bench.rows import Row
from bench.stack import running_stack

Figures = dict[str, float]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 1024**3
    return (
        f"{os.cpu_count()} cores, {ram:.0f} GB RAM, {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def rows(sizes: scenarios.Sizes) -> list[Row]:
    small, large = sizes.submit_sizes
    s = sizes.slot_seconds
    return [
        Row(
            "1 Slot utilisation",
            f"{sizes.slot_calls} calls, concurrency {sizes.slot_concurrency}, "
            f"{s:g} s ring + {s:g} s call: ideal / measured",
            "slot_utilisation",
            "",
            ">= 0.95",
            lambda v: v >= 0.95,
        ),
        Row("", "ideal makespan", "slot_ideal", "s", "", None),
        Row("", "measured submit -> batch.completed", "slot_measured", "s", "", None),
        Row(
            "2 CPS utilisation",
            f"{sizes.cps_calls} calls, limit {sizes.cps_limit}/s: achieved rate / limit",
            "cps_utilisation",
            "",
            ">= 0.95",
            lambda v: v >= 0.95,
        ),
        Row(
            "",
            "most creations in any 1 s window",
            "cps_max_window",
            "",
            f"<= {sizes.cps_limit}",
            lambda v: v <= sizes.cps_limit,
        ),
        Row(
            "3 Engine throughput",
            f"{sizes.throughput_calls} zero-length calls, submit -> batch.completed",
            "engine_rate",
            "calls/s",
            "",
            None,
        ),
        Row("", f"bare Celery, {sizes.throughput_calls} no-op tasks", "celery_rate", "tasks/s", "", None),
        Row("", "engine / bare Celery", "engine_ratio", "", ">= 0.33", lambda v: v >= 0.33),
        Row(
            "4 Submit latency",
            f"POST {small:,} calls -> 202",
            f"submit_{small}_s",
            "s",
            "<= 1",
            (lambda v: v <= 1) if small == 10_000 else None,
        ),
        Row(
            "",
            f"POST {large:,} calls -> 202",
            f"submit_{large}_s",
            "s",
            "<= 10",
            (lambda v: v <= 10) if large == 100_000 else None,
        ),
        Row(
            "5 Dispatch latency", "slot freed -> next create, p50", "dispatch_p50_ms", "ms", "<= 20", lambda v: v <= 20
        ),
        Row("", "slot freed -> next create, p99", "dispatch_p99_ms", "ms", "<= 200", lambda v: v <= 200),
        Row("", "batch start: first calls' grant -> create, p99", "dispatch_start_p99_ms", "ms", "", None),
        Row(
            "6 Memory (peak RSS)", f"API, largest process, {small:,}-call batch", f"mem_{small}_api_mb", "MB", "", None
        ),
        Row("", f"API, largest process, {large:,}-call batch", f"mem_{large}_api_mb", "MB", "", None),
        Row(
            "",
            f"worker, largest process, {small:,}-call batch",
            f"mem_{small}_worker_mb",
            "MB",
            "< 300",
            lambda v: v < 300,
        ),
        Row(
            "",
            f"worker, largest process, {large:,}-call batch",
            f"mem_{large}_worker_mb",
            "MB",
            "< 300",
            lambda v: v < 300,
        ),
        Row("", f"worker, whole process tree, {large:,}-call batch", f"mem_{large}_worker_total_mb", "MB", "", None),
        *fairness_rows(fairness.SMOKE if sizes == scenarios.SMOKE else fairness.FULL),
        *export.rows(sizes.export_calls),
        *csv_rows(sizes.csv_rows),
        *suppressions.rows(sizes.suppressed_numbers),
        *dashboard.rows(sizes.dashboard_calls),
    ]


def csv_rows(rows: int) -> list[Row]:
    full = rows == 1_000_000
    return [
        Row(
            "9 CSV upload",
            f"POST a {rows:,}-row CSV (text/csv) -> 202",
            f"csv_{rows}_s",
            "s",
            "<= 60",
            (lambda v: v <= 60) if full else None,
        ),
        Row("", "rows accepted per second", f"csv_{rows}_rows_per_s", "rows/s", "", None),
        Row("", "API CPU time, its checking process included", f"csv_{rows}_api_cpu_s", "s", "", None),
        Row(
            "",
            "API, largest process, peak RSS",
            f"csv_{rows}_api_mb",
            "MB",
            "<= 250",
            (lambda v: v <= 250) if full else None,
        ),
    ]


def fairness_rows(sizes: fairness.FairSizes) -> list[Row]:
    behind = f"behind {sizes.big_calls} calls at concurrency {sizes.big_concurrency} ({fairness.LIMIT}/s, 2 s calls)"
    tenants, batches = sizes.share_tenants, sizes.share_batches
    return [
        Row(
            "7 Fair turns",
            f"other tenant's {sizes.small_calls} calls {behind}: POST -> first dial",
            "fair_other_first_dial_s",
            "s",
            "<= 2",
            lambda v: v <= 2,
        ),
        Row("", "... POST -> batch.completed", "fair_other_done_s", "s", "<= 9", lambda v: v <= 9),
        Row("", "... limit used", "fair_other_cps_utilisation", "", ">= 0.95", lambda v: v >= 0.95),
        Row("", "... most creations in any 1 s window", "fair_other_cps_max_window", "", "<= 5", lambda v: v <= 5),
        Row(
            "",
            f"same tenant's priority-0 {sizes.small_calls} calls {behind}: POST -> first dial",
            "fair_urgent_first_dial_s",
            "s",
            "<= 1.5",
            lambda v: v <= 1.5,
        ),
        Row("", "... POST -> batch.completed", "fair_urgent_done_s", "s", "<= 6.5", lambda v: v <= 6.5),
        Row("", "... limit used", "fair_urgent_cps_utilisation", "", ">= 0.95", lambda v: v >= 0.95),
        Row("", "... most creations in any 1 s window", "fair_urgent_cps_max_window", "", "<= 5", lambda v: v <= 5),
        Row(
            "",
            f"{tenants * batches} small batches of {tenants} tenants behind a big one: least share / equal",
            "fair_share_min",
            "",
            ">= 0.8",
            lambda v: v >= 0.8,
        ),
        Row("", "... greatest share / equal", "fair_share_max", "", "<= 1.2", lambda v: v <= 1.2),
        Row("", "scheduler, per dial, 10 batches waiting", "sched_10_us", "us", "", None),
        Row("", "scheduler, per dial, 1,000 batches waiting", "sched_1000_us", "us", "", None),
        Row("", "1,000 batches / 10 batches", "sched_ratio", "", "<= 1.25", lambda v: v <= 1.25),
    ]


def _fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return f"{text} {unit}".strip()


SCENARIOS = ("slots", "cps", "throughput", "submit", "fairness", "export", "csv", "suppressions", "dashboard")


def run(
    runs: int,
    sizes: scenarios.Sizes,
    pool_size: int,
    profile_dir: Path | None,
    console: Console,
    only: tuple[str, ...] = SCENARIOS,
) -> list[Figures]:
    results: list[Figures] = []
    receiver = Receiver()
    try:
        with running_stack(pool_size, profile_dir) as stack:
            stack.start_api()
            for number in range(1, runs + 1):
                figures: Figures = {}
                steps: list[tuple[str, str, Callable[[], Figures]]] = [
                    (
                        "slots",
                        "slot utilisation + dispatch latency",
                        lambda: scenarios.slot_utilisation(stack, receiver, sizes),
                    ),
                    ("cps", "calls per second", lambda: scenarios.cps_utilisation(stack, receiver, sizes)),
                    ("throughput", "throughput vs bare Celery", lambda: scenarios.throughput(stack, receiver, sizes)),
                ]
                for calls in sizes.submit_sizes:
                    steps.append(
                        (
                            "submit",
                            f"submit {calls:,} + memory",
                            functools.partial(scenarios.submit_and_memory, stack, receiver, sizes, calls),
                        )
                    )
                fair = fairness.SMOKE if sizes == scenarios.SMOKE else fairness.FULL
                for label, measure in (
                    ("other tenant behind a big batch", fairness.other_tenant),
                    ("urgent batch behind a big batch", fairness.urgent_batch),
                    ("tenant shares", fairness.tenant_shares),
                    ("scheduler cost", fairness.scheduler_cost),
                ):
                    steps.append(("fairness", label, functools.partial(measure, stack, receiver, fair)))
                steps.append(("export", "results export", functools.partial(export.export, stack, sizes.export_calls)))
                steps.append(
                    ("csv", f"CSV upload of {sizes.csv_rows:,} rows", lambda: uploads.csv_upload(stack, sizes.csv_rows))
                )
                steps.append(
                    (
                        "suppressions",
                        f"suppression lookups, {sizes.suppressed_numbers:,} listed",
                        functools.partial(suppressions.suppression_lookups, stack, sizes.suppressed_numbers),
                    )
                )
                steps.append(
                    (
                        "dashboard",
                        "dashboard pages",
                        functools.partial(dashboard.dashboard, stack, sizes.dashboard_calls),
                    )
                )
                steps = [step for step in steps if step[0] in only]
                for _, label, step in steps:
                    started = time.time()
                    found = step()
                    figures.update(found)
                    console.log(
                        f"run {number}/{runs} {label}: "
                        + ", ".join(f"{k}={v:.3g}" for k, v in found.items())
                        + f" ({time.time() - started:.0f} s)"
                    )
                results.append(figures)
    finally:
        receiver.stop()
    return results


def table(results: list[Figures], sizes: scenarios.Sizes, pool_size: int) -> Table:
    out = Table(
        title=f"Batchcalls benchmark: median of {len(results)} run(s); 2 workers x prefork --concurrency {pool_size}"
    )
    for name in ("scenario", "measure", "median", "runs", "target", "met"):
        out.add_column(name, justify="right" if name in ("median", "runs") else "left")
    for row in rows(sizes):
        values = [r[row.key] for r in results if row.key in r]
        median = statistics.median(values) if values else float("nan")
        spread = " / ".join(_fmt(v, "") for v in values)
        met = "" if row.met is None or not values else ("yes" if row.met(median) else "NO")
        out.add_row(row.scenario, row.measure, _fmt(median, row.unit), spread, row.target, met)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="small sizes, one run: checks the suite works")
    parser.add_argument(
        "--pool",
        type=int,
        default=os.cpu_count() or 2,
        help="prefork --concurrency of each of the two workers (default: the machine's cores)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="record py-spy profiles of the API and workers into this directory"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.smoke else 3)
    sizes = scenarios.SMOKE if args.smoke else scenarios.FULL
    console = Console(width=160)
    console.print(f"machine: {machine()}")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results = run(runs, sizes, args.pool, args.profile, console, only)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine(), "pool": args.pool, "runs": results}, indent=1))
    console.print(table(results, sizes, args.pool))
    console.print(f"machine: {machine()}")
    return 0
