from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from must import config


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 10
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    init: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def test_defaults_and_overrides() -> None:
    cfg = config.from_dict(Outer, config.apply_overrides({}, ["inner.lr=0.5", "sizes=[3, 4]", "init=ckpt.pt"]))
    assert cfg.inner.lr == 0.5 and cfg.inner.steps == 10
    assert cfg.sizes == (3, 4)
    assert cfg.init == "ckpt.pt"


def test_int_is_accepted_as_float_but_not_the_reverse() -> None:
    assert config.from_dict(Outer, {"inner": {"lr": 1}}).inner.lr == 1.0
    with pytest.raises(config.ConfigError, match="inner.steps: expected an integer"):
        config.from_dict(Outer, {"inner": {"steps": 1.5}})


def test_unknown_key_names_key_and_valid_choices() -> None:
    with pytest.raises(config.ConfigError) as error:
        config.from_dict(Outer, config.apply_overrides({}, ["inner.lrr=0.5"]))
    message = str(error.value)
    assert "inner.lrr" in message and "lr, mode, steps" in message


def test_wrong_type_and_bad_literal() -> None:
    with pytest.raises(config.ConfigError, match="inner.lr: expected a number"):
        config.from_dict(Outer, {"inner": {"lr": "fast"}})
    with pytest.raises(config.ConfigError, match="choose one of a, b"):
        config.from_dict(Outer, {"inner": {"mode": "c"}})


def test_override_syntax_error() -> None:
    with pytest.raises(config.ConfigError, match="key.sub=value"):
        config.apply_overrides({}, ["inner.lr"])


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = config.from_dict(Outer, {"inner": {"lr": 0.25}, "extra": {"depth": 2}})
    config.save(cfg, tmp_path / "config.yaml")
    again = config.load(Outer, tmp_path / "config.yaml")
    assert again == cfg


def test_missing_preset_lists_shipped_ones() -> None:
    with pytest.raises(config.ConfigError, match="not found"):
        config.read_yaml("no-such-preset")


@dataclass(frozen=True)
class WithPresetDefault:
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5, steps=99))


def test_partial_override_refines_the_fields_own_default() -> None:
    cfg = config.from_dict(WithPresetDefault, {"inner": {"mode": "b"}})
    assert cfg.inner == Inner(lr=0.5, steps=99, mode="b")


def test_an_empty_mapping_replaces_instead_of_merging() -> None:
    from must.config import merge

    assert merge({"a": {"x": 1}, "b": {"y": 2}}, {"a": {}, "b": {"z": 3}}) == {"a": {}, "b": {"y": 2, "z": 3}}


def test_differing_keys_names_nested_paths() -> None:
    saved = {"train": {"steps": 4, "lr": 0.1}, "teachers": [{"task": "depth"}], "seed": 0}
    wanted = {"train": {"steps": 8, "lr": 0.1}, "teachers": [{"task": "detection"}], "extra": 1, "seed": 0}
    assert config.differing_keys(saved, wanted) == ["extra", "teachers", "train.steps"]
    assert config.differing_keys(saved, saved) == []
    assert config.differing_keys(1, 2) == ["<root>"]


@dataclass(frozen=True)
class Checked:
    name: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise config.ConfigError(f"count must be positive, got {self.count}")
        if self.name == "bug":
            raise ValueError("an invariant of the class broke")


def test_missing_key_refused_and_a_bug_in_a_check_is_not_hidden() -> None:
    with pytest.raises(config.ConfigError, match=r"^missing config key 'inner.name'$"):
        config.from_dict(Checked, {}, "inner")
    with pytest.raises(config.ConfigError, match=r"^inner: count must be positive, got 0$"):
        config.from_dict(Checked, {"name": "a", "count": 0}, "inner")
    with pytest.raises(ValueError, match="invariant") as caught:
        config.from_dict(Checked, {"name": "bug"})
    assert not isinstance(caught.value, config.ConfigError)
