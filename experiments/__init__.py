"""The experiment suite: the papers' claims with seeds and confidence intervals.

Two parts live here:

- `dvc.yaml` (stage `experiments`, run by `make experiments`): the suite flow `flows.experiments`,
  which writes reports/REPORT.md, reports/experiments.json and reports/experiments/ (a DVC output,
  rewritten on every run).
- ActPRM research sweeps, scripts run from the repo root that reuse stage `active`'s task function
  without Prefect runs or MLflow, each writing committed JSON (and plots) under reports/sweeps/:
    python -m experiments.active_sweep    confidence thresholds (p, std_threshold): labels vs F1
    python -m experiments.active_budget   loop settings (cells of `active` overrides): active vs random vs full
    python -m experiments.active_pool     the same on a pool grown 1x, 2x, 3x
    python -m experiments.active_signal   how well each uncertainty score ranks the wrong solutions (AUROC)

The sweeps' outputs sit in reports/sweeps/, not reports/experiments/, because DVC deletes the
stage's output folder before every run.
"""
