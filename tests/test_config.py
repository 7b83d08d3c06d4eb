import pytest
from conftest import REPO

from prmflow.config import GenerateConfig, PolicyConfig, TrainConfig, load_params, load_section
from prmflow.io import DataError


def test_repo_params_load_and_match_dataclass_defaults():
    params = load_params(REPO / "params.yaml")
    # every key in params.yaml is a real field; values parse with the declared types
    assert params.policy.arch in ("llama", "qwen2")
    assert isinstance(params.policy.lr, float)
    assert params.generate.n >= 1


def test_every_params_key_is_one_field_whose_default_is_its_value():
    """Each section of params.yaml has exactly its config class's fields as keys, each declared in
    one class only (a stage config composes library options, it does not copy them), and each
    default equals params.yaml's value unless PARAMS_DIFFERENT_FROM_DEFAULTS says why not."""
    import dataclasses
    import inspect
    import typing

    from prmflow.config import PARAMS_DIFFERENT_FROM_DEFAULTS, Params, read_params

    data, _ = read_params(REPO / "params.yaml")
    classes = typing.get_type_hints(Params)
    assert set(data) == set(classes)
    differ = set()
    for section, values in data.items():
        cls = classes[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(values) == set(fields), section
        for key, value in values.items():
            owners = [c.__name__ for c in cls.__mro__ if key in inspect.get_annotations(c)]
            assert len(owners) == 1, f"{section}.{key} is declared in {owners}"
            f = fields[key]
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if default != value:
                differ.add(f"{section}.{key}")
    unexplained, stale = differ - set(PARAMS_DIFFERENT_FROM_DEFAULTS), set(PARAMS_DIFFERENT_FROM_DEFAULTS) - differ
    assert not unexplained, (
        f"params.yaml differs from the default: make them equal or say why in PARAMS_DIFFERENT_FROM_DEFAULTS: {sorted(unexplained)}"
    )
    assert not stale, f"PARAMS_DIFFERENT_FROM_DEFAULTS lists keys whose default is params.yaml's value: {sorted(stale)}"


def test_unknown_key_names_file_line_and_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("policy:\n  seed: 1\n  learning_rate: 0.1\n")
    with pytest.raises(DataError) as e:
        load_section(p, "policy", PolicyConfig)
    assert f"{p}:3" in str(e.value)
    assert "policy.learning_rate" in str(e.value) and "unknown param" in str(e.value)


def test_wrong_type_is_rejected(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("generate:\n  n: four\n")
    with pytest.raises(DataError, match=r":2: field 'generate.n': expected int, got str"):
        load_section(p, "generate", GenerateConfig)


def test_int_accepted_for_float_and_bool_rejected_for_int(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("generate:\n  temperature: 1\n  n: true\n")
    with pytest.raises(DataError, match="expected int, got bool"):
        load_section(p, "generate", GenerateConfig)
    p.write_text("generate:\n  temperature: 1\n")
    cfg = load_section(p, "generate", GenerateConfig)
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)


def test_unknown_section_and_bad_yaml(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("polcy:\n  seed: 1\n")
    with pytest.raises(DataError, match=r":1: field 'polcy': unknown section"):
        load_params(p)
    p.write_text("policy: [1, 2\n")
    with pytest.raises(DataError, match="invalid YAML"):
        load_params(p)


def test_engine_knobs_reach_the_backend_they_belong_to(monkeypatch):
    """generate/label engine knobs become load_backend kwargs of their backend only; a knob of
    another backend is an error naming it, and each knob set gets its own cached engine."""
    from prmflow.config import LabelConfig, TrainConfig
    from tasks import backends

    vllm = GenerateConfig(
        backend="vllm",
        dtype="bfloat16",
        tensor_parallel_size=4,
        max_model_len=4096,
        enforce_eager=False,
        entropy_top_k=10,
    )
    assert vllm.backend_kwargs() == {
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "max_model_len": 4096,
        "enforce_eager": False,
        "entropy_top_k": 10,
    }
    assert LabelConfig(backend="openai", base_url="http://127.0.0.1:8000/v1", concurrency=2).backend_kwargs() == {
        "top_logprobs": 20,
        "concurrency": 2,
        "base_url": "http://127.0.0.1:8000/v1",
    }
    assert (
        GenerateConfig().backend_kwargs() == {}
        and GenerateConfig(backend="vllm").backend_kwargs()["max_model_len"] is None
    )
    with pytest.raises(ValueError, match="tensor_parallel_size is read by the vllm backend only"):
        GenerateConfig(tensor_parallel_size=2)
    with pytest.raises(ValueError, match="base_url is read by the openai backend only"):
        LabelConfig(backend="vllm", base_url="http://x")
    with pytest.raises(ValueError, match="backend must be one of"):
        LabelConfig(backend="tgi")
    with pytest.raises(ValueError, match="lora_r > 0 .* freeze_backbone"):
        TrainConfig(lora_r=4, freeze_backbone=True)
    with pytest.raises(ValueError, match="launcher"):
        TrainConfig(launcher="torchrun")

    calls = []
    monkeypatch.setattr(backends, "load_backend", lambda name, model, **kw: calls.append((name, model, kw)) or object())
    backends.clear()
    a = backends.cached_backend(vllm, "m", 64)
    assert backends.cached_backend(vllm, "m", 64) is a and len(calls) == 1
    assert calls[0] == ("vllm", "m", {"batch_size": 64, **vllm.backend_kwargs()})
    backends.cached_backend(GenerateConfig(backend="vllm", dtype="float16"), "m", 64)
    assert len(calls) == 2 and calls[1][2]["dtype"] == "float16"
    backends.clear()


def test_a_knob_of_another_backend_in_params_names_file_line_and_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("generate:\n  backend: transformers\n  tensor_parallel_size: 2\n")
    with pytest.raises(
        DataError,
        match=r"params.yaml:3: field 'generate.tensor_parallel_size': tensor_parallel_size is read by the vllm backend only",
    ):
        load_section(p, "generate", GenerateConfig)


def test_params_rewritten_by_dvc_exp_run_keep_their_meaning(tmp_path):
    """`dvc exp run -S` re-dumps params.yaml as YAML 1.2 and unquotes 'no'; we must still read a string."""
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  mixed_precision: no\n  freeze_backbone: true\n  lm_features: False\n")
    cfg = load_section(p, "train", TrainConfig)
    assert cfg.mixed_precision == "no" and cfg.freeze_backbone is True and cfg.lm_features is False
    p.write_text("train:\n  freeze_backbone: yes\n")  # YAML 1.1's yes is a string now: a clear type error
    with pytest.raises(DataError, match=r"params.yaml:2.*train.freeze_backbone"):
        load_section(p, "train", TrainConfig)


def test_config_doctests():
    import doctest

    import prmflow.config
    import prmflow.options

    for module in (prmflow.config, prmflow.options):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__
