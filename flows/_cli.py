"""Command-line entry shared by the stage flows: `python -m flows.<stage> [--params FILE]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from prmflow.config import load_params
from prmflow.io import DataError


def main(flow: Callable[..., Any], doc: str | None) -> None:
    """Validate params.yaml up front (clear file:line:key errors), then run the flow."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        load_params(args.params)
        flow(params=args.params)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
