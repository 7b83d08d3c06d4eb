"""Stage `results`: reports/RESULTS.md, rendered from every default stage's metrics file.

python -m flows.results [--reports-dir reports]
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from prmflow import io, tracking
from prmflow.results import METRICS_FILES, render


@flow(name="results", log_prints=True)
def results_flow(params: str | list[str] = "params.yaml", reports_dir: str = "reports") -> str:
    root = Path(reports_dir)
    reports = {stage: json.loads((root / f).read_text()) for stage, f in METRICS_FILES.items() if (root / f).is_file()}
    text = render(reports)
    with tracking.stage_run("results") as run:
        io.write_text(root / "RESULTS.md", text)
        run.artifact(root / "RESULTS.md")
    print(f"results: {root / 'RESULTS.md'} from {len(reports)} of {len(METRICS_FILES)} metrics files")
    return text


if __name__ == "__main__":
    from flows._cli import main

    main(results_flow, __doc__)
