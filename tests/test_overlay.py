"""Params overlays (params.yaml + params-real.yaml) and the stage command line built from a flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows._cli import parse_args
from prmflow.config import GenerateConfig, load_params, load_section, read_layered
from prmflow.io import DataError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_overlay_overrides_only_its_keys(tmp_path):
    base = _write(tmp_path, "base.yaml", "generate:\n  n: 4\n  temperature: 1.0\n")
    over = _write(tmp_path, "over.yaml", "generate:\n  n: 2\n")
    cfg = load_section([base, over], "generate", GenerateConfig)
    assert cfg.n == 2 and cfg.temperature == 1.0
    last = _write(tmp_path, "last.yaml", "generate:\n  n: 3\n")
    assert load_section([base, over, last], "generate", GenerateConfig).n == 3  # later overlays win


def test_overlay_key_missing_from_base_names_overlay_file_and_line(tmp_path):
    base = _write(tmp_path, "base.yaml", "generate:\n  n: 4\n")
    over = _write(tmp_path, "over.yaml", "generate:\n  n: 2\n  temprature: 0.5\n")
    with pytest.raises(DataError, match=r"over\.yaml:3: field 'generate\.temprature': not in the base file"):
        read_layered([base, over])


def test_overlay_type_error_points_at_the_overlay(tmp_path):
    base = _write(tmp_path, "base.yaml", "generate:\n  n: 4\n")
    over = _write(tmp_path, "over.yaml", "\ngenerate:\n  n: four\n")
    with pytest.raises(DataError, match=r"over\.yaml:3: field 'generate\.n': expected int"):
        load_section([base, over], "generate", GenerateConfig)


def test_real_overlay_is_valid_and_only_differs():
    files = [str(ROOT / "params.yaml"), str(ROOT / "params-real.yaml")]
    load_params(files)  # every key known, every type right
    base, _ = read_layered(files[:1])
    over, _ = read_layered(files[1:])
    same = [f"{s}.{k}" for s, kv in over.items() for k, v in kv.items() if base[s][k] == v]
    assert not same, f"params-real.yaml repeats params.yaml's values: {same}"


def test_cli_exposes_flow_paths_and_repeated_params():
    from flows.generate import generate

    args = parse_args(generate, None, ["--params", "a.yaml", "--params", "b.yaml", "--out-path", "x.jsonl"])
    assert args.params == ["a.yaml", "b.yaml"] and args.out_path == "x.jsonl"
    assert parse_args(generate, None, []).problems_path == "data/problems/pool.jsonl"
