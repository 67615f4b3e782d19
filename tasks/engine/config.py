"""YAML + defaults + ``--opts`` overrides -> one validated config.

The schema is one :class:`~tasks.engine.schema.Key` record per key (``defaults.ENGINE`` and
the task's ``Task.schema``): a key declared in neither is an error, and so is a value of
another type or outside what its record allows.  Every error is one line naming the file,
the dotted key, the value and what is allowed, with a close-match suggestion for typos.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import task as task_registry
from .defaults import ENGINE
from .io import atomic_write
from .schema import ConfigError, Key, Section, defaults_of, renamed_key, section_of, suggest

__all__ = ["Config", "ConfigError", "load", "make_config", "parse_opts", "parse_yaml", "save"]


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
    #: How the task was chosen when the config sets no ``TASK`` ("" when it does).
    task_note: str = ""

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
    """Defaults of the task's schema, then ``data``, then ``overrides``, every value checked."""
    given = {**data, **dict(overrides)}
    task_registry.import_modules(given.get("CUSTOM_IMPORTS", ENGINE["CUSTOM_IMPORTS"].default), source)
    task_name, read_as = _task_of(given)
    schema = _task_class(task_name, source).config_schema()
    reader = _Reader(schema, source, read_as)
    merged = {**defaults_of(schema), "TASK": task_name}
    reader.merge(merged, data, schema, prefix="")
    for key, value in overrides:
        reader.set_dotted(merged, key, value)
    reader.validate(merged)
    cfg = _to_config(merged)
    cfg.task_note = read_as
    return cfg


def _task_of(given: dict) -> tuple[Any, str]:
    """``TASK``, or for a config without one the task its ``MODEL.NAME`` belongs to (an
    experiment file of SimpleBaseline or HRNet) and the note that says so."""
    if "TASK" in given:
        return given["TASK"], ""
    model = given.get("MODEL")
    name = given.get("MODEL.NAME", model.get("NAME") if isinstance(model, dict) else None)
    inferred = task_registry.infer(name) if isinstance(name, str) and name else None
    if inferred is None:
        return ENGINE["TASK"].default, f"read as TASK {ENGINE['TASK'].default}: the config sets no TASK"
    return inferred, f"read as TASK {inferred} from MODEL.NAME {name}: the config sets no TASK"


def _task_class(name, source):
    available = task_registry.available()
    if str(name) not in available:
        raise ConfigError(f"{source}: TASK: unknown task {name!r}{suggest(str(name), available)}; "
                          f"choose one of {', '.join(available)}")
    return task_registry.get(str(name))


class _Reader:
    """Puts a file's values and ``--opts`` overrides into the defaults, one record at a time."""

    def __init__(self, schema: Section, source: str, read_as: str):
        self.schema, self.source = schema, source
        self.read_as = f" ({read_as})" if read_as else ""

    def merge(self, target: dict, data: dict, section: Section, prefix: str, source: str = "") -> None:
        source = source or self.source
        for key, value in self._renamed(data, section, prefix).items():
            dotted = f"{prefix}{key}"
            if key not in section:
                raise ConfigError(f"{source}: {dotted}: unknown key{suggest(key, section, prefix)}; "
                                  f"allowed here: {', '.join(sorted(map(str, section)))}{self.read_as}")
            self._put(target, key, value, section[key], dotted, source)

    def _put(self, target: dict, key: str, value: Any, spec, dotted: str, source: str) -> None:
        inner = section_of(spec)
        if inner is None or (isinstance(spec, Key) and not isinstance(value, dict)):
            target[key] = spec.coerce(value, f"{source}: {dotted}")
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {dotted}: expected a section (mapping), got {value!r}")
        if target[key] is None:  # an optional section, set: its defaults, then the values given
            target[key] = defaults_of(inner)
        self.merge(target[key], value, inner, f"{dotted}.", source)

    def _renamed(self, data: dict, section: Section, prefix: str) -> dict:
        """``data`` with older spellings (``Key.old``) moved to the current names."""
        out = {}
        for key, value in data.items():
            new = renamed_key(section, key) if key not in section else None
            if new is not None and new in data:
                raise ConfigError(f"{self.source}: {prefix}{key} and {prefix}{new} are the same "
                                  f"setting; keep {prefix}{new} only")
            out[new or key] = value
        return out

    def set_dotted(self, target: dict, dotted: str, value: Any) -> None:
        """One ``--opts KEY VALUE`` pair."""
        parts = dotted.split(".")
        node, section = target, self.schema
        for i, part in enumerate(parts):
            prefix = ".".join(parts[:i]) + ("." if i else "")
            if section is not None and part not in section:
                part = renamed_key(section, part) or part
            if section is None or part not in section:
                options = section or {}
                raise ConfigError(f"--opts: {dotted}: unknown key{suggest(part, options, prefix)}{self.read_as}")
            if i < len(parts) - 1 and node[part] is None:
                raise ConfigError(f"--opts: {dotted}: {prefix}{part} is null; give it as a whole "
                                  f"({prefix}{part} {{KEY: VALUE, ...}})")
            if i == len(parts) - 1:
                if isinstance(section[part], dict) and not isinstance(value, dict):
                    raise ConfigError(f"--opts: {dotted}: is a section; override its keys one by one "
                                      f"({dotted}.KEY VALUE)")
                self._put(node, part, value, section[part], f"{prefix}{part}", "--opts")
                return
            node, section = node[part], section_of(section[part])

    def validate(self, cfg: dict) -> None:
        """The values each record allows, and the keys that must exceed another's."""
        self.root = cfg
        self._validate(cfg, self.schema, "")

    def _validate(self, node: dict, section: Section, prefix: str) -> None:
        for name, spec in section.items():
            value, dotted = node[name], f"{prefix}{name}"
            if isinstance(spec, Key):
                spec.validate(value, f"{self.source}: {dotted}")
                self._check_above(spec, value, dotted)
            if section_of(spec) is not None and isinstance(value, dict):
                self._validate(value, section_of(spec), f"{dotted}.")

    def _check_above(self, spec: Key, value: Any, dotted: str) -> None:
        if spec.above and value is not None:
            other, why = spec.above
            if not value > _lookup(self.root, other):
                raise ConfigError(f"{self.source}: {dotted}: {value!r} is not above {other} "
                                  f"({_lookup(self.root, other)!r}): {why}")


def _lookup(cfg: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _to_config(node: Any) -> Any:
    if isinstance(node, dict):
        return Config({k: _to_config(v) for k, v in node.items()})
    return node
