"""Peak memory of the default pipeline: the largest resident set of any stage process.

    python -m bench.peak_rss [--limit-gib 4] [--no-force] [-- dvc repro targets...]

Runs `dvc repro --force` (every stage of the default pipeline, in this checkout; outputs are
deterministic, so they come back byte-identical) as a child process and reads the peak RSS of
the largest descendant from getrusage(RUSAGE_CHILDREN) (Linux: every waited-for descendant,
i.e. every stage process DVC started). Writes reports/bench/peak_rss.json and exits 1 if the
peak is over the limit (the reliability issue's bar: 4 GiB). It takes as long as the pipeline
(about 30 min on 2 cores), so it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time

from prmflow.io import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--limit-gib", type=float, default=4.0)
    ap.add_argument("--no-force", action="store_true", help="plain `dvc repro` (only stages that are out of date)")
    ap.add_argument("--out", default="reports/bench/peak_rss.json")
    ap.add_argument("targets", nargs="*")
    args = ap.parse_args()
    cmd = ["dvc", "repro", *([] if args.no_force else ["--force"]), *args.targets]
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    result = {
        "command": " ".join(cmd),
        "returncode": rc,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "limit_mib": args.limit_gib * 1024,
        "within_limit": peak_mib <= args.limit_gib * 1024,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    write_json(args.out, result)
    print(
        f"peak RSS {peak_mib:.0f} MiB (limit {args.limit_gib * 1024:.0f} MiB) over {seconds / 60:.1f} min; "
        f"dvc exited {rc}; wrote {args.out}"
    )
    return 0 if rc == 0 and result["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
