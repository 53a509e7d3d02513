"""Every conf/**/*.yaml composes with its entry point, every experiment states its command, and the
composed config validates (lightning-hydra-template: test all configs)."""

import enum
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pvllm.config import ConfigError, validate_eval_config, validate_train_config
from tests.conftest import REPO
from tests.entrypoints import compose_config

CONF = REPO / "conf"
TRAIN_GROUPS = ["data", "model", "trainer", "strategy", "callbacks", "logger", "history", "paths"]
EVAL_GROUPS = ["generator", "rater"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _experiment_command(path: Path) -> str:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines[0].strip() == "# @package _global_", f"{path.name}: first line must be '# @package _global_'"
    m = re.match(r"#\s*(python (train|evaluate)\.py .*?)(\s{2,}.*)?$", lines[1])
    assert m, f"{path.name}: second line must be the command that reproduces it, got {lines[1]!r}"
    return m.group(1)


def _resolve(cfg):
    # resolve everything except Hydra's own node: every interpolation in the job config must work
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def _own(path: Path) -> tuple[dict, list]:
    """The values a YAML file sets itself (unresolved) and its defaults list."""
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return raw, raw.pop("defaults", [])


def _assert_applied(path: Path, want, got, skip: set[str], where: str = "") -> int:
    """Every value ``path`` sets is in the composed config (unless a command-line override sets it);
    returns how many values were compared."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path.name}: {where or '<root>'} is not a mapping in the composed config"
        n = 0
        for k, v in want.items():
            key = f"{where}.{k}" if where else k
            if key in skip:
                continue
            assert k in got, f"{path.name}: {key} is missing from the composed config"
            n += _assert_applied(path, v, got[k], skip, key)
        return n
    if isinstance(got, enum.Enum):  # e.g. hydra.mode: MULTIRUN
        got = got.name
    assert got == want, f"{path.name}: {where} composed to {got!r}, the file sets {want!r}"
    return 1


def _assert_choices(path: Path, defaults: list, cfg) -> int:
    n = 0
    for entry in defaults:
        if isinstance(entry, dict):
            for k, v in entry.items():
                if k.startswith("override /"):
                    group = k.removeprefix("override /")
                    assert cfg.hydra.runtime.choices[group] == v, f"{path.name}: {group} is not {v}"
                    n += 1
    return n


@pytest.mark.parametrize("group", TRAIN_GROUPS)
def test_every_train_group_option_composes(group, tmp_path):
    for option in _options(group):
        cfg = compose_config("train", [f"{group}={option}"], tmp_path)
        _resolve(cfg)
        path = CONF / group / f"{option}.yaml"
        own, _ = _own(path)
        assert cfg.hydra.runtime.choices[group] == option
        assert _assert_applied(path, own, OmegaConf.to_container(cfg[group], resolve=False), set()) >= 1


@pytest.mark.parametrize("group", EVAL_GROUPS)
def test_every_eval_group_option_composes(group, tmp_path):
    targets = set()
    for option in _options(group):
        cfg = compose_config("evaluate", [f"{group}={option}"], tmp_path)
        if (group, option) == ("rater", "none"):  # no judge: caption metrics only
            assert cfg.rater is None
            targets.add(("no judge", ""))
            continue
        assert "_target_" in cfg[group], f"conf/{group}/{option}.yaml has no _target_"
        _resolve(cfg)
        path = CONF / group / f"{option}.yaml"
        own, _ = _own(path)
        assert _assert_applied(path, own, OmegaConf.to_container(cfg[group], resolve=False), set()) >= 1
        # the recorded generator name is the config's name: distinct per file (gemini_flash != gemini_pro)
        assert cfg.hydra.runtime.choices[group] == option
        targets.add((cfg[group]._target_, OmegaConf.to_yaml(cfg[group])))
    assert len(targets) == len(_options(group))  # no two options compose to the same thing


@pytest.mark.parametrize("path", sorted((CONF / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_composes_with_its_command(path, tmp_path):
    cmd = _experiment_command(path)
    entry = "train" if cmd.startswith("python train.py") else "evaluate"
    # the overrides of the documented command, minus multirun lists (take the first value)
    args = [a for a in cmd.split()[2:] if "=" in a and not a.startswith(("-", "["))]
    args = [a.split(",")[0] if "=" in a and "," in a.split("=", 1)[1] and "[" not in a else a for a in args]
    cfg = compose_config(entry, args, tmp_path)
    _resolve(cfg)
    # the experiment's own settings and group choices are what composed (except those its command overrides)
    own, defaults = _own(path)
    skip = {a.split("=", 1)[0].lstrip("+~") for a in args}
    n = _assert_applied(path, own, OmegaConf.to_container(cfg, resolve=False), skip)
    assert n + _assert_choices(path, defaults, cfg) >= 1, f"{path.name} sets nothing"


def test_train_defaults_validate(tmp_path):
    validate_train_config(compose_config("train", [], tmp_path))


def test_validation_reports_every_error_at_once(tmp_path):
    cfg = compose_config("train", ["history.k=99", "history.mode=mine", "optim.lr=-1", "data.root=/nope"], tmp_path)
    with pytest.raises(ConfigError) as e:
        validate_train_config(cfg)
    msg = str(e.value)
    for part in ("history.k", "history.mode", "optim.lr", "data.root"):
        assert part in msg
    cfg = compose_config("evaluate", ["split=dev", "num_shards=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)split.*shard/num_shards"):
        validate_eval_config(cfg)
