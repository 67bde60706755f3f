"""`python -m bench`: run every benchmark and print the table (see bench/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import docker

from bench import api_rate, cache_hit, latency, spool_scale, throughput
from bench.stack import DockerEvents, Serve, SpoolEvents, progress
from bench.stats import Report, table
from nixjail.settings import Settings

GROUPS = ("latency", "cache", "api", "throughput", "spool")
MIN_SCALE = 1000
# (full, --quick)
SIZES = {"runs": (50, 3), "count": (200, 6), "probe": (20, 2), "scale": (100_000, 1_000),
         "cache_rounds": (10, 2), "api_rounds": (6, 2), "api_seconds": (2.0, 0.3),
         "spool_rounds": (100, 5)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (for tests)")
    parser.add_argument("--runs", type=int, help="latency runs (default 50)")
    parser.add_argument("--count", type=int, help="throughput submissions (default 200)")
    parser.add_argument("--scale", type=int,
                        help="submissions in the large spool (default 100000; the small "
                        "one holds a tenth of it, at most 1000; at least 1000)")
    parser.add_argument("--json", metavar="FILE", nargs="?", const="-",
                        help="write the report as JSON to FILE (and print the table), "
                        "or with - or no FILE print JSON instead of the table")
    parser.add_argument("--only", metavar="GROUPS", default=",".join(GROUPS),
                        help=f"comma-separated subset of {','.join(GROUPS)}")
    args = parser.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.scale < MIN_SCALE:
        parser.error(f"--scale must be at least {MIN_SCALE:,} (the small spool holds a tenth "
                     "of it, and a page of the list needs that many)")
    args.only = [g for g in args.only.split(",") if g]
    unknown = set(args.only) - set(GROUPS)
    if unknown:
        parser.error(f"--only: no group {', '.join(sorted(unknown))} (groups: {', '.join(GROUPS)})")
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: everything started is stopped


def stack_rows(args: argparse.Namespace, report: Report) -> None:
    settings = Settings()  # what `nixjail serve` runs with when given no settings file
    image = settings.runner.image
    report.context.update(image=image, runner_concurrency=settings.runner.concurrency,
                          api_threads=settings.api.threads)
    with contextlib.ExitStack() as stack:
        docker_client = stack.enter_context(contextlib.closing(docker.from_env()))
        serve = stack.enter_context(Serve())
        spool = SpoolEvents(serve.state_dir)
        stack.callback(spool.close)
        containers = DockerEvents(serve.runner_name)
        stack.callback(containers.close)
        timed: list[latency.Timed] = []
        if "latency" in args.only:
            progress("measuring latency")
            floor, timed = latency.measure(serve, docker_client, image, args.runs)
            with Serve(settings_toml=latency.NO_POOL_SETTINGS) as no_pool:
                cold_floor, cold = latency.measure(no_pool, docker_client, image, args.runs)
            report.rows += latency.rows(floor, timed, cold_floor, cold)
            report.breakdown, report.breakdown_notes, total_ms = latency.breakdown(
                timed, spool, containers)
            report.context["breakdown_latency_ms"] = total_ms
        if "cache" in args.only:
            progress("measuring cache hit")
            report.rows += cache_hit.measure(serve, spool, args.cache_rounds)
        if "api" in args.only:
            progress("measuring API")
            some = timed[0].submission.id if timed else latency.check_hello(
                serve.client.submit(latency.hello(), wait_s=latency.WAIT_S)).id
            report.rows += api_rate.measure(serve.url, some, settings.api.threads,
                                            args.api_rounds, args.api_seconds)
        if "throughput" in args.only:
            progress("measuring throughput and runner memory")
            report.rows += throughput.measure(serve, image, args.count, args.probe,
                                              settings.runner.concurrency)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    report = Report(context={
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
        "sizes": {name: getattr(args, name) for name in SIZES}})
    if set(args.only) - {"spool"}:
        stack_rows(args, report)
    if "spool" in args.only:
        small = min(1000, args.scale // 10)
        progress(f"measuring the spool at {small:,} and {args.scale:,} stored (filling takes "
                 "a while)")
        report.rows += spool_scale.measure(small, args.scale, args.spool_rounds)
    report.context["load_at_end"] = os.getloadavg()
    write: Callable[[str], object] = sys.stdout.write
    if args.json == "-":
        write(report.to_json() + "\n")
    else:
        write(table(report) + "\n")
        if args.json:
            Path(args.json).write_text(report.to_json() + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: stopped; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
