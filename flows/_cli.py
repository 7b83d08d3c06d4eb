"""Command-line entry shared by the stage flows.

    python -m flows.<stage> [--params FILE [--params OVERLAY ...]] [--<flow-arg> VALUE ...]
                            [--run-info FILE]

`--params` may be given several times: the first file is the base (default params.yaml), each
later one an overlay of only the keys that differ (`params-real.yaml`). Every other keyword
argument of the flow (paths such as `--problems-path`) is an option of the same name, so one flow
serves several DVC pipelines. `--run-info FILE` writes the stage's wall time and peak RSS as
JSON when the flow succeeds.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from prmflow.config import load_params
from prmflow.io import DataError, write_json
from prmflow.summaries import DegenerateRun


def _flow_options(flow: Callable[..., Any]) -> dict[str, Any]:
    """The flow's keyword arguments other than `params`, with their defaults."""
    fn = getattr(flow, "fn", flow)
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if name != "params" and p.default is not inspect.Parameter.empty
    }


def parse_args(flow: Callable[..., Any], doc: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument(
        "--params", action="append", default=None, help="params file; repeat to add overlays (default: params.yaml)"
    )
    parser.add_argument("--run-info", default=None, help="write wall time and peak RSS of this stage here (JSON)")
    for name, default in _flow_options(flow).items():
        opt = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(opt, dest=name, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(opt, dest=name, type=type(default) if default is not None else str, default=default)
    args = parser.parse_args(argv)
    args.params = args.params or ["params.yaml"]
    return args


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(flow: Callable[..., Any], doc: str | None, argv: list[str] | None = None) -> None:
    """Validate the params files up front (clear file:line:key errors), then run the flow."""
    args = parse_args(flow, doc, argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("params", "run_info")}
    params: str | list[str] = args.params[0] if len(args.params) == 1 else args.params
    start = time.perf_counter()
    try:
        load_params(params)
        flow(params=params, **kwargs)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except DegenerateRun as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    if args.run_info:
        write_json(
            args.run_info,
            {
                "stage": getattr(flow, "name", getattr(flow, "__name__", "?")),
                "wall_s": round(time.perf_counter() - start, 1),
                "peak_rss_mib": round(peak_rss_mib(), 1),
            },
        )


def params_arg(doc: str | None) -> str | list[str]:
    """Only the `--params` value(s) of this command line (for processes that run no flow)."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--params", action="append", default=None)
    files = parser.parse_known_args()[0].params or ["params.yaml"]
    return files[0] if len(files) == 1 else files
