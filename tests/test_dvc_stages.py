"""DVC must not go stale: every module a stage imports is one of its deps, and its params deps
are exactly the knobs that change its outputs (tools/dvc_deps.py computes both; its docstring
says how). `python -m tools.dvc_deps` rewrites the dvc files when this fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prmflow.config import SPEED_ONLY
from tools import dvc_deps
from tools.dvc_deps import ROOT, import_closure

STAGES = [(f, name) for f in dvc_deps.DVC_FILES for name in dvc_deps.stages(f)]
IDS = [f"{f}:{name}" for f, name in STAGES]


@pytest.mark.parametrize("f,name", STAGES, ids=IDS)
def test_every_imported_module_is_a_dep(f, name):
    stage, wdir = dvc_deps.stages(f)[name]
    deps = [(wdir / d).resolve() for d in stage.get("deps", []) if "${" not in str(d)]
    missing = sorted(
        str(p.relative_to(ROOT))
        for p in import_closure(dvc_deps.entry(stage["cmd"]))
        if not any(p == d or d in p.parents for d in deps)
    )
    assert not missing, (
        f"{f}: stage {name!r} imports modules missing from its deps: {missing} (python -m tools.dvc_deps rewrites them)"
    )


@pytest.mark.parametrize("f,name", STAGES, ids=IDS)
def test_code_deps_are_exactly_the_closure(f, name):
    # no dep on code the stage never imports: it would rerun for nothing
    stage, _ = dvc_deps.stages(f)[name]
    code, _ = dvc_deps.expected(f, name)
    got = [d for d in stage.get("deps", []) if dvc_deps.is_code(str(d))]
    assert sorted(got) == code, f"{f}: stage {name!r} code deps {got} are not its import closure {code}"


@pytest.mark.parametrize("f,name", STAGES, ids=IDS)
def test_params_deps_are_the_output_changing_keys(f, name):
    stage, _ = dvc_deps.stages(f)[name]
    got = dvc_deps.params_deps(stage)
    whole = sorted(k for keys in got.values() for k in keys if "." not in k)
    assert not whole, f"{f}: stage {name!r} depends on whole params sections {whole}; list dotted keys"
    _, want = dvc_deps.expected(f, name)
    want = {file: keys for file, keys in want.items() if keys}
    assert got == want, f"{f}: stage {name!r} params deps {got} are not its output-changing keys {want}"


def test_speed_only_knobs_exist_in_params():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    unknown = {f"{s}.{k}" for s, keys in SPEED_ONLY.items() for k in keys if k not in base.get(s, {})}
    assert not unknown, f"prmflow.config.SPEED_ONLY names keys params.yaml does not have: {sorted(unknown)}"


def test_the_walker_follows_lazy_and_from_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "prmflow"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from prmflow import lazy\n")
    (pkg / "lazy.py").write_text("import numpy\n")
    (pkg / "unused.py").write_text("")
    monkeypatch.setattr(dvc_deps, "ROOT", tmp_path)
    closure = {str(p.relative_to(tmp_path)) for p in import_closure("prmflow.sub")}
    assert closure == {"prmflow/__init__.py", "prmflow/sub/__init__.py", "prmflow/sub/leaf.py", "prmflow/lazy.py"}
    assert dvc_deps.minimal_cover({tmp_path / p for p in closure}) == [
        "prmflow/__init__.py",
        "prmflow/lazy.py",
        "prmflow/sub",
    ]


def test_the_dvc_files_are_what_the_tool_writes():
    assert all(dvc_deps.rewrite(f) == (ROOT / f).read_text() for f in dvc_deps.DVC_FILES), (
        "python -m tools.dvc_deps would change a dvc file"
    )


def test_rewrite_keeps_data_deps_and_comments(tmp_path):
    text = dvc_deps.rewrite("dvc.yaml")
    old = (Path(ROOT) / "dvc.yaml").read_text()
    for line in old.splitlines():
        s = line.strip()
        if s.startswith("#") or s.startswith("- data/") or s.startswith("- models/"):
            assert line in text.splitlines()
