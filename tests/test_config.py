import pytest

from prmflow.config import GenerateConfig, PolicyConfig, load_params, load_section
from prmflow.io import DataError

from conftest import REPO


def test_repo_params_load_and_match_dataclass_defaults():
    params = load_params(REPO / "params.yaml")
    # every key in params.yaml is a real field; values parse with the declared types
    assert params.policy.arch in ("llama", "qwen2")
    assert isinstance(params.policy.lr, float)
    assert params.generate.n >= 1


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
