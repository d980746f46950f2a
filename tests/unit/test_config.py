from pathlib import Path

import pytest

from vad.config import ConfigError, FuseJobConfig, ScoreJobConfig, TrainJobConfig, load_config, parse_config


def _write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


GOOD = """
source: {uri: s3://archive/cams}
output: {uri: /tmp/results}
scorer: {checkpoint: s3://models/conv_ae.pt, batch_size: 8}
storage: {endpoint_url: "http://127.0.0.1:9000"}
"""


def test_valid_config_loads_with_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ScoreJobConfig)
    assert cfg.scorer.batch_size == 8
    assert cfg.decode.clip_len == 16 and cfg.decode.resize == (128, 128)
    assert cfg.mlflow.tracking_uri is None


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = _write(tmp_path, GOOD.replace("batch_size: 8", "batch_sze: 8"))
    with pytest.raises(ConfigError) as err:
        load_config(path, ScoreJobConfig)
    message = str(err.value)
    assert "scorer.batch_sze: unknown key" in message
    assert "did you mean 'batch_size'" in message


def test_every_problem_is_listed(tmp_path):
    path = _write(tmp_path, "source: {uri: x}\nscorer: {checkpoint: y, batch_size: -1}\ndecode: {clip_len: many}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ScoreJobConfig)
    message = str(err.value)
    assert "output: required key is missing" in message
    assert "scorer.batch_size" in message
    assert "decode.clip_len" in message


def test_bad_regex_and_half_credentials_rejected():
    with pytest.raises(ConfigError, match="key_pattern"):
        parse_config({"source": {"uri": "x", "key_pattern": "("}, "output": {"uri": "o"}, "scorer": {"checkpoint": "c"}}, ScoreJobConfig)
    with pytest.raises(ConfigError, match="given together"):
        parse_config(
            {"source": {"uri": "x"}, "output": {"uri": "o"}, "scorer": {"checkpoint": "c"}, "storage": {"access_key_id": "a"}},
            ScoreJobConfig,
        )


def test_fleet_settings_are_checked():
    base = {"source": {"uri": "x"}, "output": {"uri": "o"}}
    fleet = parse_config({**base, "scorer": {"checkpoint": "models:/vad-conv-ae.{camera}@champion", "fallback": "s3://m/shared.pt"}}, ScoreJobConfig)
    assert fleet.scorer.per_camera and parse_config({**base, "scorer": {"checkpoint": "c", "cameras": {"cam1": "a.pt"}}}, ScoreJobConfig).scorer.per_camera
    with pytest.raises(ConfigError, match="scorer.fallback is for fleets"):
        parse_config({**base, "scorer": {"checkpoint": "c.pt", "fallback": "d.pt"}}, ScoreJobConfig)
    train = {"source": {"uri": "x"}, "train": {"per_camera": True}}
    with pytest.raises(ConfigError, match=r"needs \{camera\} in output.checkpoint"):
        parse_config({**train, "output": {"checkpoint": "m.pt"}}, TrainJobConfig)
    with pytest.raises(ConfigError, match="mil needs labelled footage"):
        parse_config({**train, "output": {"checkpoint": "{camera}.pt"}, "model": {"name": "mil"}}, TrainJobConfig)
    assert parse_config({**train, "output": {"checkpoint": "{camera}.pt"}}, TrainJobConfig).train.per_camera


def test_overrides_and_missing_file(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ScoreJobConfig, {"decode.stride": 4, "scorer.device": "cpu"})
    assert cfg.decode.stride == 4 and cfg.scorer.device == "cpu"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", ScoreJobConfig)


def test_secrets_are_not_printed():
    cfg = parse_config(
        {"source": {"uri": "x"}, "output": {"checkpoint": "c.pt"}, "storage": {"access_key_id": "AKIA123", "secret_access_key": "s3cr3t"}},
        TrainJobConfig,
    )
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.model_dump())
    assert cfg.storage.secret_access_key.get_secret_value() == "s3cr3t"


# Every field of a job's configuration is described in the code and shown, with a comment, in the
# example file users copy (commented out where it holds a secret or an alternative).
EXAMPLES = {"score.yaml": ScoreJobConfig, "train.yaml": TrainJobConfig, "fuse.yaml": FuseJobConfig}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _fields(model, prefix=()):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def _documented_keys(text: str) -> dict[tuple[str, ...], str]:
    """(section, key) or (key,) -> the line's comment, for `key:` and commented-out `# key:` lines."""
    import re

    found, section = {}, None
    for line in text.splitlines():
        match = re.match(r"^( *)(?:# ?)?([a-z_]+):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
        if indent == 0 and not line.startswith("#"):
            section = key if not rest.split("#", 1)[0].strip() else None
            found[(key,)] = comment
        elif indent == 2 and section:
            found[(section, key)] = comment
    return found


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_field_is_described_and_documented_in_the_example_config(name):
    text = (CONFIGS / name).read_text()
    documented = _documented_keys(text)
    undescribed = [".".join(path) for path, field in _fields(EXAMPLES[name]) if not field.description]
    assert not undescribed, f"fields without a description: {undescribed}"
    missing = [".".join(path) for path, _ in _fields(EXAMPLES[name]) if not documented.get(path)]
    assert not missing, f"configs/{name} lacks (or has no comment on) {missing}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_configs_load(name):
    cfg = load_config(CONFIGS / name, EXAMPLES[name])
    assert (cfg.output.uri if name == "fuse.yaml" else cfg.source.uri).startswith("s3://")


def test_training_names_the_ray_address_as_scoring_does_and_reads_the_old_key_with_a_warning(caplog):
    import logging

    base = {"source": {"uri": "s3://a/b"}, "output": {"checkpoint": "s3://m/x.pt"}}
    assert parse_config({**base, "ray": {"address": "auto", "num_cpus": 4}}, TrainJobConfig).ray.address == "auto"
    with caplog.at_level(logging.WARNING, logger="vad.config"):
        old = parse_config({**base, "distributed": {"ray_address": "auto", "num_cpus": 4, "num_workers": 2}}, TrainJobConfig)
    assert (old.ray.address, old.ray.num_cpus, old.distributed.num_workers) == ("auto", 4, 2)
    assert "distributed.ray_address is deprecated: use ray.address" in caplog.text
    with pytest.raises(ConfigError, match="disagree"):
        parse_config({**base, "distributed": {"ray_address": "auto"}, "ray": {"address": "10.0.0.1:6379"}}, TrainJobConfig)
