"""Exact DVC deps for every stage: the code a stage imports and the params keys that change it.

    python -m tools.dvc_deps          # rewrite the code and params deps of dvc.yaml, real/dvc.yaml, experiments/dvc.yaml
    python -m tools.dvc_deps --check  # exit 1 and print the differences instead (what tests/test_dvc_stages.py asserts)

A stage's cmd is `python -m flows.<stage>`. Its import closure is computed statically from the
source: every `import` and `from ... import`, at module level or inside a function (lazy imports
run too), following only this repo's packages (prmflow, tasks, flows), with each parent package's
`__init__.py`. Its code deps are the smallest list of files and folders that covers exactly that
closure: a folder only when every module in it is imported.

Its params deps are dotted keys (`generate.seed`), never whole sections: every key of each section
the stage reads (a `load_section(params, "<section>", ...)` call in its closure), minus the
speed-only knobs of `prmflow.config.SPEED_ONLY`. A stage that reads an overlay (real/dvc.yaml:
params-real.yaml) depends on the overlay's keys of those sections as well.

Non-code deps (data, models) and everything else in the files are left as they are.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prmflow", "tasks", "flows")
DVC_FILES = ("dvc.yaml", "real/dvc.yaml", "experiments/dvc.yaml")


def module_file(name: str) -> Path | None:
    """The repo file of module `name` (a package's __init__.py), or None when it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def imports(path: Path, module: str) -> set[str]:
    """Module names that `path` (module `module`) imports, with every parent package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    out = set()
    for n in names:
        parts = n.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def import_closure(module: str) -> set[Path]:
    """Every repo file that `python -m <module>` can import."""
    return set(_closure(module, ROOT))


@functools.cache
def _closure(module: str, root: Path) -> frozenset[Path]:
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo.extend(imports(path, name) - seen.keys())
    return frozenset(seen.values())


def minimal_cover(files: set[Path]) -> list[str]:
    """The shortest list of repo paths covering exactly `files`: a folder where every module in
    it (and below) is in `files`, otherwise the files themselves."""

    def modules(d: Path) -> set[Path]:
        return {p for p in d.rglob("*.py") if "__pycache__" not in p.parts}

    out: set[Path] = set()
    for f in files:
        best = f
        for d in f.parents:
            if d == ROOT or not modules(d) <= files:
                break
            best = d
        out.add(best)
    out = {p for p in out if not any(q in p.parents for q in out)}
    return sorted(str(p.relative_to(ROOT)) for p in out)


def entry(cmd: str) -> str:
    m = re.search(r"python -m (flows\.\w+)", cmd)
    if not m:
        raise ValueError(f"cmd {cmd!r} is not `python -m flows.<stage>`")
    return m.group(1)


def sections_read(module: str) -> set[str]:
    pat = re.compile(r"load_section\(\s*\w+\s*,\s*[\"'](\w+)[\"']")
    return {s for p in import_closure(module) for s in pat.findall(p.read_text())}


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def expected_params(module: str, overlays: list[str], wdir: Path) -> dict[str, list[str]]:
    """{params file: dotted keys} a stage must depend on ("params.yaml" for the base)."""
    from prmflow.config import SPEED_ONLY

    sections = sections_read(module)
    out = {}
    for file in ["params.yaml", *overlays]:
        doc = yaml.safe_load((wdir / file).read_text())
        out[file] = sorted(f"{s}.{k}" for s in sections for k in doc.get(s) or {} if k not in SPEED_ONLY.get(s, ()))
    return out


def stages(dvc_file: str) -> dict[str, tuple[dict, Path]]:
    doc = yaml.safe_load((ROOT / dvc_file).read_text())
    return {
        name: (st, ((ROOT / dvc_file).parent / st.get("wdir", ".")).resolve()) for name, st in doc["stages"].items()
    }


def params_deps(stage: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in stage.get("params", []):
        if isinstance(p, dict):
            for file, keys in p.items():
                out.setdefault(file, []).extend(keys)
        else:
            out.setdefault("params.yaml", []).append(p)
    return {f: sorted(k) for f, k in out.items()}


def expected(dvc_file: str, name: str) -> tuple[list[str], dict[str, list[str]]]:
    """(code deps relative to the stage's wdir, params deps) that stage `name` must have."""
    st, wdir = stages(dvc_file)[name]
    module = entry(st["cmd"])
    code = [
        str((ROOT / p).relative_to(wdir))
        if (ROOT / p).is_relative_to(wdir)
        else str(Path(*([".."] * len(wdir.relative_to(ROOT).parts))) / p)
        for p in minimal_cover(import_closure(module))
    ]
    overlays = [f for f in params_deps(st) if f != "params.yaml"]
    return code, expected_params(module, overlays, wdir)


# ------------------------------------------------------------------------------ rewrite


def _render_params(params: dict[str, list[str]]) -> list[str]:
    lines = [f"      - {k}" for k in params.get("params.yaml", [])]
    for file, keys in params.items():
        if file != "params.yaml" and keys:
            lines.append(f"      - {file}:")
            lines += [f"          - {k}" for k in keys]
    return lines


def rewrite(dvc_file: str) -> str:
    """dvc_file's text with every stage's code deps and params deps replaced by the expected ones."""
    lines = (ROOT / dvc_file).read_text().splitlines()
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage = m.group(1)
        if stage and line.strip() in ("deps:", "params:") and line.startswith("    ") and not line.startswith("     "):
            key = line.strip()[:-1]
            j = i + 1
            while j < len(lines) and (lines[j].startswith("      ") or not lines[j].strip()) and lines[j].strip():
                j += 1
            block = lines[i + 1 : j]
            code, params = expected(dvc_file, stage)
            out.append(line)
            if key == "deps":
                out += [f"      - {d}" for d in code]
                out += [b for b in block if not is_code(b.strip()[2:].strip())]
            else:
                out += _render_params(params)
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="print the differences and exit 1 instead of rewriting")
    args = ap.parse_args(argv)
    stale = []
    for f in DVC_FILES:
        new = rewrite(f)
        if new != (ROOT / f).read_text():
            stale.append(f)
            if not args.check:
                (ROOT / f).write_text(new)
    if args.check and stale:
        print(f"stale DVC deps in {stale}: run `python -m tools.dvc_deps`", file=sys.stderr)
        return 1
    print(("rewrote " if stale else "up to date: ") + ", ".join(stale or DVC_FILES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
