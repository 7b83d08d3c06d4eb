"""Tasks of stage `convert`: a GGUF checkpoint to a transformers model directory."""

from __future__ import annotations

from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow.config import ConvertConfig
from prmflow.policy.convert import convert_gguf, resolve_gguf


@task(cache_policy=NO_CACHE, tags=["cpu"])
def convert(cfg: ConvertConfig, out_dir: str, work_dir: str) -> dict[str, Any]:
    """Assemble (or find) the GGUF file, de-quantize it and `save_pretrained` it to `out_dir`.

    Not cached by Prefect: DVC decides when this stage reruns (the model dir is its output).
    """
    gguf = resolve_gguf(cfg.source, work_dir)
    return convert_gguf(gguf, out_dir, dtype=getattr(torch, cfg.dtype))
