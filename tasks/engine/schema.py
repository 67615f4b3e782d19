"""One record per config key: everything the tools know about it, in one place.

A :class:`Key` holds a key's default, its type (the item type of a list too), the values it
allows (choices, a numeric range, list lengths), whether it may be null, its older
spellings, what a SimpleBaseline/HRNet file's value of it means here, and whether it changes
the training (``--resume`` compares only those).  The engine declares its sections in
``tasks/engine/defaults.py``; a task declares its own keys in ``Task.schema`` (a nested dict
of records; a plain value there changes the default of a key declared elsewhere, or declares
a new key of that value's type).  See docs/config.md.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UserError


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a section (mapping)"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
_COUNTS = {1: "one", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Key:
    """A config key.  ``type`` is ``str``, ``int``, ``float``, ``bool``, ``dict`` (a free-form
    mapping), ``list[X]`` or a tuple of these alternatives; it defaults to the default's type.
    ``ge``/``gt``/``le``/``lt`` bound a number (a list's items, for a list); ``length`` lists
    the list lengths allowed; ``check`` is ``(predicate, "what is allowed")`` for rules these
    cannot say; ``above`` is ``(dotted key, why)``: the value must exceed that key's.  A
    ``dict`` key with ``keys`` is an optional section (HRNet's ``MODEL.EXTRA.STAGE2``): null,
    or a mapping checked against those records, their defaults filled in."""

    default: Any
    type: Any = None
    choices: tuple = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    length: tuple[int, ...] = ()
    check: tuple[Callable[[Any], bool], str] | None = None
    above: tuple[str, str] | None = None
    keys: dict | None = None  # a dict key's own records: null, or a section of these keys
    hint: str = ""  # said after what is allowed: "0 = the whole epoch"
    old: tuple[str, ...] = ()  # older spellings of the key's name (same section)
    reference: str = ""  # what a reference file's value does here (listed at start when set)
    run_only: bool = False  # where or how fast a run goes, not what it trains (--resume)

    def __post_init__(self):
        if self.type is None:
            if self.default is None:
                raise TypeError("a Key with a null default needs its type (Key(None, type=float))")
            object.__setattr__(self, "type", _infer_type(self.default))
        for alternative in self.alternatives:
            if alternative is list:
                raise TypeError("a list Key needs its item type (type=list[int], list[str] ...)")
        if self.keys is not None and self.type is not dict:
            raise TypeError("a Key with keys (an optional section) has type=dict")
        object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def alternatives(self) -> tuple:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    @property
    def nullable(self) -> bool:
        return self.default is None

    def with_default(self, value: Any) -> "Key":
        return dataclasses.replace(self, default=value)

    # -- checking one value ----------------------------------------------------------------
    def coerce(self, value: Any, where: str) -> Any:
        """``value`` in this key's type (ints widen to floats, tuples to lists) or a one-line
        :class:`ConfigError`; ``where`` is ``"file: DOTTED.KEY"``."""
        if value is None and self.nullable:
            return None
        if any(type(value) is type(c) and value == c for c in self.choices):
            return value
        if isinstance(value, tuple):
            value = list(value)
        for alternative in self.alternatives:
            if _is_instance(value, alternative):
                return _widen(value, alternative, where)
        raise ConfigError(f"{where}: expected {self._type_text()}, got {value!r} ({type(value).__name__})")

    def _type_text(self) -> str:
        if self.choices and len({type(c) for c in self.choices}) > 1:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        names = [_TYPE_NAMES.get(_origin(t), str(t)) for t in self.alternatives]
        if len(self.alternatives) == 1:
            names = [_type_name(self.type)]
        return " or ".join(names) + (" (or null)" if self.nullable else "")

    def validate(self, value: Any, where: str) -> None:
        """Refuse a value of the right type that this key does not allow (one line)."""
        if value is None:
            return
        if self.choices:
            if value not in self.choices:
                raise ConfigError(f"{where}: {value!r} is not allowed; choose one of "
                                  f"{', '.join(map(str, self.choices))}"
                                  f"{suggest(value, self.choices) if isinstance(value, str) else ''}")
            return
        items = value if isinstance(value, list) else [value]
        numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if (not all(map(self._in_range, numbers)) or (self.length and len(value) not in self.length)
                or (self.check and not self.check[0](value))):
            raise ConfigError(f"{where}: {value!r} is not allowed; expected {self.describe()}")

    def _in_range(self, v) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe(self) -> str:
        """What this key allows, in words ("a number in [0, 1)", "an integer >= 1")."""
        if self.check:
            return self.check[1]
        kind = self.alternatives[0]
        item = _item_type(kind)
        noun = _type_name(kind if item is None else item)
        if item is not None:
            count = " ".join(_COUNTS.get(n, str(n)) for n in self.length if n) or ""
            noun = f"a list of {count + ' ' if count else ''}{_PLURALS.get(item, 'values')}"
            if 0 in self.length:
                noun = f"[] or {noun}"
        text = noun + self._range_text(item or kind)
        return f"{text} ({self.hint})" if self.hint else text

    def _range_text(self, kind) -> str:
        low, high = (self.ge, "[") if self.ge is not None else (self.gt, "(")
        top, close = (self.le, "]") if self.le is not None else (self.lt, ")")
        if kind is int and low is not None and top is not None:  # integers: say both ends inclusive
            low, high = (low + (high == "("), "[")
            top, close = (top - (close == ")"), "]")
        if low is not None and top is not None:
            if kind is int and high == "[" and close == "]":
                return f" from {_number(low)} to {_number(top)}"
            return f" in {high}{_number(low)}, {_number(top)}{close}"
        if low is not None:
            return f" {'>=' if high == '[' else '>'} {_number(low)}"
        if top is not None:
            return f" {'<=' if close == ']' else '<'} {_number(top)}"
        return ""


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _infer_type(default):
    if isinstance(default, list) and default:
        kinds = {_infer_type(v) for v in default}
        if kinds <= {int, float}:
            return list[float] if float in kinds else list[int]
        if len(kinds) == 1:
            return list[kinds.pop()]
    return type(default)


def _origin(kind):
    return typing.get_origin(kind) or kind


def _item_type(kind):
    return typing.get_args(kind)[0] if _origin(kind) is list and typing.get_args(kind) else None


def _type_name(kind) -> str:
    item = _item_type(kind)
    if item is not None:
        return f"a list of {_PLURALS.get(item, 'values')}"
    return _TYPE_NAMES.get(_origin(kind), getattr(kind, "__name__", str(kind)))


def _is_instance(value, kind) -> bool:
    """YAML's types: a bool is not a number, an int is a number where a float is expected."""
    origin = _origin(kind)
    if origin is bool:
        return isinstance(value, bool)
    if origin in (int, float):
        return (isinstance(value, int) or (origin is float and isinstance(value, float))) \
            and not isinstance(value, bool)
    if origin is list:
        item = _item_type(kind)
        return isinstance(value, list) and (item is None or all(_is_instance(v, item) for v in value))
    return isinstance(value, origin)


def _widen(value, kind, where: str):
    """A float key's value as a float; a list's float items are checked, not converted, so a
    config saves back as it was written."""
    if kind is float:
        return _finite(value, where)
    if _item_type(kind) is float:
        for item in value:
            _finite(item, where)
    return value


def _finite(value, where: str) -> float:
    number = float(value) if abs(value) < 1e308 else math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return number


def _show(choice) -> str:
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def suggest(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


# -- sections ------------------------------------------------------------------------------
Section = dict  # name -> Key | Section, in the order keys are written to config.yaml


def merge(base: Section, extra: dict) -> Section:
    """``base`` with a task's declarations: a :class:`Key` adds or replaces a record, a dict
    adds to a section, a plain value changes a declared key's default (or declares a new key
    of that value's type).  New keys come after the section's others."""
    out = dict(base)
    for name, spec in extra.items():
        current = out.get(name)
        if isinstance(spec, dict):
            out[name] = merge(current if isinstance(current, dict) else {}, spec)
        elif isinstance(spec, Key):
            out[name] = spec
        elif isinstance(current, Key):
            out[name] = current.with_default(copy.deepcopy(spec))
        else:
            out[name] = Key(copy.deepcopy(spec))
    return out


def defaults_of(section: Section) -> dict:
    """The nested dict of every key's default (a fresh copy)."""
    return {name: defaults_of(spec) if isinstance(spec, dict) else copy.deepcopy(spec.default)
            for name, spec in section.items()}


def records(section: Section, prefix: str = ""):
    """``(dotted name, Key)`` of every key, in order."""
    for name, spec in section.items():
        if isinstance(spec, dict):
            yield from records(spec, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", spec


def section_of(spec) -> Section | None:
    """The records under ``spec``: a section's, an optional section's (``Key.keys``), or None."""
    return spec if isinstance(spec, dict) else spec.keys


def record_of(section: Section, dotted: str) -> Key | None:
    """The record of ``dotted`` or of the free-form key it lies inside, else None."""
    node: Any = section
    for part in dotted.split("."):
        inner = section_of(node)
        if inner is None:
            return node
        if part not in inner:
            return None
        node = inner[part]
    return node if isinstance(node, Key) else None


def flatten(node: dict, prefix: str = "") -> dict:
    """``{"TRAIN.LR": 0.1, ...}`` of a nested config dict (an empty section is one entry)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def renamed_key(section: Section, name: str) -> str | None:
    """The current name of ``name`` when it is an older spelling of a key of ``section``."""
    return next((new for new, spec in section.items()
                 if isinstance(spec, Key) and name in spec.old), None)


