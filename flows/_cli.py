"""Command-line entry shared by the stage flows: `python -m flows.<stage> [--params FILE]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from prmflow.config import load_params
from prmflow.io import DataError


def params_arg(doc: str | None) -> str:
    """The `--params FILE` of this command line (default params.yaml)."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser.parse_args().params


def main(flow: Callable[..., Any], doc: str | None) -> None:
    """Validate params.yaml up front (clear file:line:key errors), then run the flow."""
    params = params_arg(doc)
    try:
        load_params(params)
        flow(params=params)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
