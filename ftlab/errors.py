"""Every error a user can cause, and the helpers that word and check them.

One vocabulary: each is a ValueError subclass whose message names the argument or field, shows the value
and says what is allowed or what to do. A caller's mistake is answered here, at the entry of the function
it called, before weights load or training starts; never by a KeyError, TypeError or AttributeError from
deep inside a library. `.field` names what was wrong, so the widgets can show the message beside it.

    ConfigError        a setting is out of range (TrainConfig, estimate_memory, the panel, trainer arguments)
    DataError          a dataset, file or record is unusable (names the file and line, or the record number)
    ModelNotFoundError a model name, folder or hub id gives no usable weights
    CheckpointError    a saved adapter or checkpoint does not belong to this run or base, or is damaged
    RunStateError      a call made when it cannot act (Run.wait before Run.start, a run started twice)
"""
from __future__ import annotations

import math
import numbers

import numpy as np


class FtlabError(ValueError):
    """Base of the errors a user can cause: a whole message, and `.field`, the argument or field at fault (None
    if several)."""

    field: str | None = None

    def __init__(self, message: str, field: str | None = None):
        if field is not None:
            self.field = field
        super().__init__(message)

    def __reduce__(self):  # picklable (worker processes hand errors back)
        return (type(self), (str(self), self.field))

    def _render_traceback_(self):  # IPython: the message, not a traceback through ftlab's internals
        return [f"⚠ {type(self).__name__}: {self}"]


class ConfigError(FtlabError):
    """A value is not allowed: `.field`, `.value`, `.allowed` (the message is "field=value is not allowed: ...")."""

    def __init__(self, field_name: str, value, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}={_show(value)} is not allowed: {allowed}", field_name)

    def __reduce__(self):
        return (type(self), (self.field, self.value, self.allowed))


class DataError(FtlabError):
    """A dataset name, file or record is unusable; the message says which and where (file:line or record i)."""


class ModelNotFoundError(FtlabError):
    """The model name is neither a preset, a usable local folder nor a reachable hub id."""

    field = "model"


class CheckpointError(FtlabError):
    """A saved run (adapter folder or checkpoint) cannot be used for what was asked."""


class RunStateError(FtlabError):
    """A call that the run's state does not allow; the message says what to call first."""


def short(value, limit: int = 60) -> str:
    """repr cut to `limit` characters: a record or a list quoted in a message shows its start, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_listeners(listeners) -> None:
    """None, or a list (or tuple) of functions, each called with an event dict (a bare string or dict is not)."""
    if listeners is not None and (isinstance(listeners, (str, dict)) or not isinstance(listeners, (list, tuple))
                                  or not all(callable(f) for f in listeners)):
        raise ConfigError("listeners", listeners, "None or a list of functions, each called with an event dict")


def _show(value) -> str:
    """repr, shortened: a 10,000-item list in a message helps nobody."""
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"


# --- checks: return the value in its plain Python type (numpy scalars become int/float) -----------------

def check_int(field: str, value, lo: int, hi: int | None = None, error=ConfigError) -> int:
    """An integer in [lo, hi]; numpy integers are accepted and returned as int. bool is refused (True is not 1)."""
    allowed = f"an integer from {lo} to {hi}" if hi is not None else f"an integer ≥ {lo}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _make(error, field, value, allowed)
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise _make(error, field, value, allowed)
    return value


def check_number(field: str, value, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, error=ConfigError) -> float:
    """A finite real number within the bounds (lo < value if lo_open, else lo ≤ value; the same for hi)."""
    parts = []
    if lo is not None:
        parts.append(f"> {lo:g}" if lo_open else f"≥ {lo:g}")
    if hi is not None:
        parts.append(f"< {hi:g}" if hi_open else f"≤ {hi:g}")
    allowed = "a finite number" + (" " + " and ".join(parts) if parts else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _make(error, field, value, allowed)
    value = float(value)
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise _make(error, field, value, allowed)
    return value


def check_choice(field: str, value, allowed, error=ConfigError):
    """One of `allowed` (a str is never taken for a number, nor a number for a str)."""
    options = list(allowed)
    try:
        ok = value in options and any(type(value) is type(o) or (_is_int(value) and _is_int(o)) for o in options
                                      if o == value)
    except TypeError:  # unhashable or uncomparable (a list, a dict)
        ok = False
    if not ok:
        raise _make(error, field, value, f"one of {options}")
    return int(value) if _is_int(value) else value


def check_bool(field: str, value, error=ConfigError) -> bool:
    """True or False exactly: the string "False" is truthy, and 0/1 hide a mistake."""
    if not isinstance(value, bool):
        if not isinstance(value, np.bool_):
            raise _make(error, field, value, "True or False")
    return bool(value)


def check_text(field: str, value, error=ConfigError, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _make(error, field, value, "a string" if allow_empty else "a non-empty string")
    return value


def check_strings(field: str, value, error=ConfigError, allow_empty_list: bool = False) -> list[str]:
    """A list (or tuple) of strings; a bare string is refused (iterating it would give its characters)."""
    what = "a list of strings" + ("" if allow_empty_list else " (at least one)")
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _make(error, field, value, what + f", not a {type(value).__name__}")
    if not value and not allow_empty_list:
        raise _make(error, field, value, what)
    bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
    if bad:
        raise _make(error, field, value, what + f"; item {bad[0]} is {_show(value[bad[0]])}")
    return list(value)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _make(error, field, value, allowed):
    if error is ConfigError:
        return ConfigError(field, value, allowed)
    return error(f"{field}={_show(value)} is not allowed: {allowed}", field=field)
