"""Configuration as data: frozen dataclasses, YAML presets, ``key.sub=value`` overrides.

Every stage has a frozen dataclass config. A config is built from a YAML preset (a file path, or
the name of a preset shipped in ``must/configs/``) plus command-line overrides, validated field by
field: an unknown key or a value of the wrong type is refused with a message naming the key and
the valid choices. The resolved config is written next to the run's outputs.

One rule for refusing a value: a config dataclass's ``__post_init__`` (and any check of a value a
user sets) raises :class:`~must.errors.ConfigError` itself, so a config built in code
(``replace(config, ...)``) fails the same way as one read from YAML; :func:`from_dict` only adds
the section's dotted path to its message. A ``ValueError`` or ``TypeError`` out of a config's
construction is a bug and is let through as one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from must.errors import ConfigError
from must.files import write_atomic

PRESET_DIR = Path(__file__).parent / "configs"

T = TypeVar("T")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a preset by path or by shipped name (``demo`` -> ``must/configs/demo.yaml``)."""
    candidate = Path(path)
    if not candidate.exists() and (PRESET_DIR / f"{path}.yaml").exists():
        candidate = PRESET_DIR / f"{path}.yaml"
    if not candidate.exists():
        raise ConfigError(f"config '{path}' not found; shipped presets: {', '.join(preset_names())}")
    try:
        data = yaml.safe_load(candidate.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{candidate}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{candidate}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a copy."""
    result = _deep_copy(data)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override '{override}' is not of the form key.sub=value")
        dotted, raw_value = override.split("=", 1)
        keys = dotted.strip().split(".")
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(raw_value) if raw_value != "" else ""
        except yaml.YAMLError:
            node[keys[-1]] = raw_value
    return result


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of ``update`` win; nested mappings merge, except that an
    explicitly empty mapping replaces (``splits: {}`` means none, not "keep the defaults")."""
    result = _deep_copy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and value and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = _deep_copy(value)
    return result


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Builds dataclass ``cls`` from ``data``, checking every key and type."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}'; valid keys: {', '.join(sorted(fields))}"
        )
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        where = f"{path}." if path else ""
        raise ConfigError(f"missing config key '{where}{missing[0]}'")
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        default = _field_default(fields[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            # A partial mapping refines the field's own default (e.g. a preset's TrainConfig with
            # fewer steps), not the nested class's bare defaults.
            value = merge(to_dict(default), value)
        values[name] = _convert(hints[name], value, f"{path}.{name}" if path else name)
    try:
        return cls(**values)
    except ConfigError as error:  # a value the class's own check refuses: say which section
        raise ConfigError(f"{path or cls.__name__}: {error}") from None


def to_dict(config: Any) -> Any:
    """Plain-data form of a config (dataclasses -> dicts, tuples -> lists) for YAML / JSON."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {str(k): to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def refuse_other_run(record: Path, fingerprint: Mapping[str, Any], holds: str) -> bool:
    """Whether ``record`` (a run's JSON record with a ``"fingerprint"``) exists; one whose
    fingerprint differs from ``fingerprint`` is a :class:`ConfigError` naming the differing keys
    ("<dir> holds <holds> (differs in ...)"), so a rerun never mixes two runs' outputs."""
    if not record.is_file():
        return False
    differing = differing_keys(json.loads(record.read_text()).get("fingerprint", {}), fingerprint)
    if differing:
        raise ConfigError(f"{record.parent} holds {holds} (differs in {', '.join(differing)}); "
                          f"use a new output directory or delete it")
    return True


def differing_keys(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two plain-data configs differ, for "holds a run of another config"
    refusals (a whole value where they are not both mappings; ``<root>`` when the roots differ)."""
    if not (isinstance(saved, Mapping) and isinstance(wanted, Mapping)):
        return [] if saved == wanted else [prefix or "<root>"]
    return [path for key in sorted(set(saved) | set(wanted), key=str)
            for path in differing_keys(saved.get(key), wanted.get(key), f"{prefix}.{key}" if prefix else str(key))]


def save(config: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML (atomically) so every run records what it ran with."""
    write_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def load(cls: type[T], preset: str | Path | None = None, overrides: Sequence[str] = (),
         section: str | None = None, defaults: Mapping[str, Any] | None = None,
         flags: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> T:
    """``defaults`` -> preset -> ``flags`` (a verb's own options put into the data) -> overrides,
    validated. ``section`` picks the preset's sub-mapping of that name when it has one (a
    ``must demo`` tree names each stage's settings); a preset without it holds the keys itself."""
    data = read_yaml(preset) if preset else {}
    if section is not None and section in data:
        data = data[section] or {}
    data = merge(defaults or {}, data)
    if flags is not None:
        data = flags(data)
    return from_dict(cls, apply_overrides(data, overrides))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, section: str, example: str) -> None:
    """``--config PRESET`` and the ``key.sub=value`` overrides of a verb whose config is ``cls``;
    the help names the shipped presets whose ``section`` this verb can read."""
    fields = {field.name for field in dataclasses.fields(cls)}
    readable = [name for name in preset_names()
                if set((read_yaml(PRESET_DIR / f"{name}.yaml").get(section) or {"": None})) <= fields]
    reads = (f"this verb reads the '{section}' section of: {', '.join(readable)}" if readable
             else f"none has a '{section}' section this verb can read")
    parser.add_argument("--config", metavar="PRESET", help=(
        f"YAML file of {cls.__name__} keys, or one whose '{section}' section holds them. The shipped "
        f"presets ({', '.join(preset_names())}) are `must demo` trees, read whole only by "
        f"`must demo`; {reads}"))
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help=f"{cls.__name__} overrides, applied last, e.g. {example}")


def replace(config: T, **changes: Any) -> T:
    return dataclasses.replace(config, **changes)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not valid; choose one of {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple or hint is tuple else converted
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {_convert(key_type, k, path): _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{path}: expected a path, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{path}: cannot interpret {value!r} as {hint}")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
