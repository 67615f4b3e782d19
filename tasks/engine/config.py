"""YAML + defaults + ``--opts`` overrides -> one validated config.

The defaults are the schema: a key that appears in neither ``defaults.BASE`` nor the task's
``Task.defaults`` is an error, and so is a value whose type differs from its default's.
Every error is one line naming the file, the dotted key, the value and what is allowed,
with a close-match suggestion for typos.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import task as task_registry
from .defaults import BASE, CHECKS, NULLABLE, RENAMED
from .errors import UserError
from .io import atomic_write


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


#: A config is a few kilobytes; these bounds keep a hostile file from exhausting memory or
#: the stack before the schema sees it (an alias "bomb", 5000 nested lists, a 5 MB list).
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
#: The longest NAME: the run folder's name, well under the file systems' 255 bytes.
MAX_NAME_LENGTH = 100


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases, deep nesting and duplicate keys, and reads
    ``1e-3`` / ``1e6`` as numbers (YAML 1.1 reads them as strings; people write them)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not supported; write the value out",
                self.peek_event().start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (the later one would silently "
                    "win); keep one", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str):
    """The one way this project reads YAML text (config files and ``--opts`` values)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class Config(dict):
    """A nested dict with attribute access (``cfg.TRAIN.LR``).

    The root also knows where its file lives (``config_dir``) so that relative paths in it
    can be resolved (see :meth:`resolve_path`).
    """

    config_dir: str = "."
    source: str = "<dict>"

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.isupper() or key[:1].isupper():
            self[key] = value
        else:
            object.__setattr__(self, key, value)

    def __deepcopy__(self, memo):
        out = Config({k: copy.deepcopy(v, memo) for k, v in self.items()})
        out.__dict__.update(self.__dict__)
        return out

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def resolve_path(self, value: str | os.PathLike) -> Path:
        """A relative path is looked up in the working directory first, then beside the
        config file; if it exists in neither, the working-directory form is returned."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path
        beside = Path(self.config_dir) / path
        return beside if beside.exists() else path


# -- public entry points ---------------------------------------------------------------------
def load(path: str | os.PathLike, opts: Iterable[str] = ()) -> Config:
    """Read a YAML file, apply ``--opts KEY VALUE ...`` and validate against the schema."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {source} (pass an existing YAML file to --cfg)")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: {size} bytes is too large for a config "
                              f"(at most {MAX_CONFIG_BYTES}); a config is a few kilobytes")
        data = parse_yaml(path.read_text())
    except yaml.composer.ComposerError as err:
        raise ConfigError(f"{source}: refused{_where(err)}: {err.problem}") from None
    except yaml.constructor.ConstructorError as err:
        if "duplicate key" in (err.problem or ""):
            raise ConfigError(f"{source}: {err.problem}{_where(err)}") from None
        tag = getattr(err, "problem", "") or str(err).splitlines()[0]
        raise ConfigError(f"{source}: unsafe or unknown YAML tag refused ({tag.strip()}); "
                          "use plain YAML values only") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{_where(err)}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: cannot read config file: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of UPPER_CASE sections, "
                          f"got {type(data).__name__}")
    cfg = build(data, parse_opts(opts), source=source)
    cfg.config_dir = str(path.parent)
    cfg.source = source
    if not cfg.NAME:
        cfg.NAME = path.stem
    check_name(cfg.NAME, source)
    return cfg


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def check_name(name: str, source: str) -> None:
    """NAME names one folder inside ``OUTPUT_DIR/TASK``: never a path that leaves it."""
    if (name in (".", "..") or any(c in name for c in "/\\\0") or len(name) > MAX_NAME_LENGTH
            or not name.isprintable()):
        raise ConfigError(f"{source}: NAME: {name[:MAX_NAME_LENGTH]!r} is not a plain run name; "
                          f"use up to {MAX_NAME_LENGTH} characters without path separators "
                          "(the run folder is OUTPUT_DIR/TASK/NAME)")


def make_config(overrides: dict | None = None, task: str | None = None,
                opts: Iterable[str] = (), config_dir: str = ".") -> Config:
    """Build a validated config from a dict (tests, scripts): the same checks as :func:`load`."""
    data = copy.deepcopy(overrides or {})
    if task is not None:
        data["TASK"] = task
    cfg = build(data, parse_opts(opts), source="<dict>")
    cfg.config_dir = config_dir
    if not cfg.NAME:
        cfg.NAME = cfg.TASK
    check_name(cfg.NAME, "<dict>")
    return cfg


def save(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically); it loads back with :func:`load`."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def parse_opts(opts: Iterable[str]) -> list[tuple[str, Any]]:
    """``["TRAIN.LR", "0.1", "SAM.METHOD", "sam"]`` -> ``[("TRAIN.LR", 0.1), ...]``; each value
    is read as a YAML scalar/list (``safe_load``), so ``0.1``, ``true``, ``[90,120]`` work."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"--opts: expected KEY VALUE pairs, got an odd number of items: {opts}")
    pairs = []
    for key, text in zip(opts[::2], opts[1::2]):
        try:
            value = parse_yaml(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        except RecursionError:
            raise ConfigError(f"--opts: {key}: value nested too deeply") from None
        pairs.append((key, value))
    return pairs


# -- schema --------------------------------------------------------------------------------
def build(data: dict, overrides: list[tuple[str, Any]], source: str) -> Config:
    given = {**data, **dict(overrides)}
    task_registry.import_modules(given.get("CUSTOM_IMPORTS", BASE["CUSTOM_IMPORTS"]), source)
    task_name = given.get("TASK", BASE["TASK"])
    task_cls = _task_class(task_name, source)
    schema = _deep_merge(BASE, task_cls.defaults)
    checks = {**CHECKS, **task_cls.checks}
    nullable = {**NULLABLE, **getattr(task_cls, "nullable", {})}
    merged = copy.deepcopy(schema)
    choices = _mixed_choices(checks)
    _merge_checked(merged, _renamed(data, source), schema, prefix="", source=source, choices=choices)
    for key, value in overrides:
        _set_dotted(merged, schema, RENAMED.get(key, key), value, source="--opts", choices=choices)
    _check_nullable(merged, nullable, source)
    _run_checks(merged, checks, source)
    return _to_config(merged)


def _renamed(data: dict, source: str) -> dict:
    """``data`` with the older key spellings of :data:`RENAMED` moved to the current ones."""
    out = dict(data)
    for old, new in RENAMED.items():
        section, old_key = old.split(".")
        new_key = new.split(".")[1]
        node = out.get(section)
        if isinstance(node, dict) and old_key in node:
            if new_key in node:
                raise ConfigError(f"{source}: {old} and {new} are the same setting; keep {new} only")
            out[section] = {(new_key if k == old_key else k): v for k, v in node.items()}
    return out


def _task_class(name, source):
    available = task_registry.available()
    if str(name) not in available:
        raise ConfigError(f"{source}: TASK: unknown task {name!r}{_suggest(str(name), available)}; "
                          f"choose one of {', '.join(available)}")
    return task_registry.get(str(name))


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _mixed_choices(checks: dict) -> dict:
    """The keys whose listed choices are of several types (``TEST.POST_PROCESS``: true,
    false or dark): such a key takes any of its choices, whatever its default's type."""
    return {dotted: rule for dotted, rule in checks.items()
            if isinstance(rule, list) and len({type(c) for c in rule}) > 1}


def _merge_checked(target: dict, data: dict, schema: dict, prefix: str, source: str,
                   choices: dict) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"{source}: {dotted}: unknown key{_suggest(key, schema, prefix)}; "
                              f"allowed here: {', '.join(sorted(map(str, schema)))}")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted}: expected a section (mapping), "
                                  f"got {value!r}")
            _merge_checked(target[key], value, default, f"{dotted}.", source, choices)
        else:
            target[key] = _coerce(value, default, dotted, source, choices=choices.get(dotted, ()))


def _set_dotted(target: dict, schema: dict, dotted: str, value: Any, source: str, choices: dict) -> None:
    parts = dotted.split(".")
    node, node_schema = target, schema
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i]) + ("." if i else "")
        if not isinstance(node_schema, dict) or part not in node_schema:
            options = node_schema if isinstance(node_schema, dict) else {}
            raise ConfigError(f"{source}: {dotted}: unknown key{_suggest(part, options, prefix)}")
        if i == len(parts) - 1:
            if isinstance(node_schema[part], dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {dotted}: is a section; override its keys "
                                      f"one by one ({dotted}.KEY VALUE)")
                _merge_checked(node[part], value, node_schema[part], f"{dotted}.", source, choices)
            else:
                node[part] = _coerce(value, node_schema[part], dotted, source, choices=choices.get(dotted, ()))
        node, node_schema = node[part], node_schema[part]


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a section (mapping)"}


def _coerce(value: Any, default: Any, dotted: str, source: str, nullable: bool = False,
            choices: list | tuple = ()) -> Any:
    """Check ``value`` against the default's type; ints widen to floats, tuples to lists.
    One of ``choices`` (a key's choices of several types) passes as it is."""
    if default is None or any(type(value) is type(c) and value == c for c in choices):
        return value
    expected = type(default)
    if isinstance(value, tuple):
        value = list(value)
    ok = (
        (expected is bool and isinstance(value, bool))
        or (expected is int and isinstance(value, int) and not isinstance(value, bool))
        or (expected is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (expected is str and isinstance(value, str))
        or (expected is list and isinstance(value, list))
        or (expected is dict and isinstance(value, dict))
    )
    if not ok:
        want = _TYPE_NAMES.get(expected, expected.__name__) + (" (or null)" if nullable else "")
        if choices:
            want = "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise ConfigError(f"{source}: {dotted}: expected {want}, got {value!r} "
                          f"({type(value).__name__})")
    if expected is float:
        number = float(value) if abs(value) < 1e308 else math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {dotted}: {value!r} is not a finite number")
        return number
    return value


def _check_nullable(cfg: dict, nullable: dict, source: str) -> None:
    """Keys whose default is ``None`` take ``None`` or a value of their declared type."""
    for dotted, expected in nullable.items():
        node, parts = cfg, dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get(parts[-1]) is None:
            continue
        kinds = expected if isinstance(expected, tuple) else (expected,)
        value = node[parts[-1]]
        if len(kinds) == 1:
            node[parts[-1]] = _coerce(value, kinds[0](), dotted, source, nullable=True)
        elif not any(_coerce_quietly(value, kind(), dotted, source) for kind in kinds):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{source}: {dotted}: expected {names} (or null), got {value!r} "
                              f"({type(value).__name__})")


def _coerce_quietly(value, default, dotted, source) -> bool:
    try:
        _coerce(value, default, dotted, source)
    except ConfigError:
        return False
    return True


def _run_checks(cfg: dict, checks: dict, source: str) -> None:
    for dotted, rule in checks.items():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        if node is None:
            continue
        if isinstance(rule, (list, tuple)) and not (len(rule) == 2 and callable(rule[0])):
            if node not in rule:
                raise ConfigError(f"{source}: {dotted}: {node!r} is not allowed; choose one of "
                                  f"{', '.join(map(str, rule))}{_suggest(str(node), rule)}")
        else:
            predicate, allowed = rule
            if not predicate(node):
                raise ConfigError(f"{source}: {dotted}: {node!r} is not allowed; expected {allowed}")


def _suggest(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _to_config(node: Any) -> Any:
    if isinstance(node, dict):
        return Config({k: _to_config(v) for k, v in node.items()})
    return node
