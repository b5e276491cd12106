"""What an artifact's ``meta.json`` may say, checked before anything is built from it.

Metadata reaches a service from the model directory and from the model topic, where
anyone who can publish writes it. :func:`validate_meta` refuses, with a
:class:`~predictor.errors.ModelLoadError` naming the field, any metadata whose numbers
are not finite, whose version is not a positive integer, whose architecture would need
more than :data:`MAX_PARAMETERS` values (counted from the spec, before a module is
built), or whose scaler and calibration are out of range. It reads and builds nothing.

The bounds are far above what training writes (a window of 100, one LSTM layer of 32,
DLinear heads: tens of thousands of values) and far below what exhausts a service's
memory (an LSTM of 16,000 hidden units needs about a billion values, 4 GB).
"""

from __future__ import annotations

import math
import re
import reprlib
from itertools import pairwise
from typing import Any, TypeGuard

from predictor.errors import ConfigError, ModelLoadError
from predictor.models.neural import ARCHITECTURES, LEVEL_MEANS, NeuralSpec, parameter_count

FORMAT = "reqcast-model/1"
TASKS = ("next_request", "load")

#: the highest version (exact as a JSON number in any reader)
MAX_VERSION = 2**53
#: every task's windows hold three quantities (a gap or a rate, request and response tokens)
CHANNELS = 3
MAX_SEQ_LEN = 4096
MAX_HORIZON = 1024
MAX_QUANTILES = 15
MAX_HIDDEN_SIZE = 4096
MAX_LAYERS = 8
MAX_ENSEMBLE = 32
#: candidate level windows of a load network (``level_windows``)
MAX_LEVEL_WINDOWS = 8
#: values (parameters and buffers) a model's state may hold: 16 MB of float32
MAX_PARAMETERS = 4_000_000
#: size of a weights file (the largest state plus the archive's overhead)
MAX_WEIGHTS_BYTES = 4 * MAX_PARAMETERS + (1 << 20)
MAX_META_BYTES = 1 << 20
#: nesting of objects and arrays in the metadata (training records are about 3 deep)
MAX_META_DEPTH = 32
MAX_NAME_CHARS = 255
#: the scaler's per-channel mean and standard deviation are of ``log1p`` values (a gap of a
#: year is 17.3): larger ones turn every forecast into an overflow
SCALER_BOUND = 100.0
#: the interval widening, in the same scaled log units
CALIBRATION_BOUND = 100.0

NORMS = ("median", "mean", "none")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _bad(field: str, want: str, got: object) -> ModelLoadError:
    shown = reprlib.repr(got)  # short and shallow, however deep ``got`` is nested
    return ModelLoadError(f"invalid meta.json: {field} must be {want}, got {shown}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(data: dict[str, Any], key: str, lo: int, hi: int, field: str) -> int:
    value = data.get(key)
    if not _is_int(value) or not lo <= value <= hi:
        raise _bad(field, f"an integer in [{lo}, {hi}]", value)
    return int(value)


def _numbers(value: object, n: int, field: str) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(_is_number(v) for v in value):
        raise _bad(field, f"a list of {n} numbers", value)
    return [float(v) for v in value]


def check_finite_tree(meta: object) -> None:
    """Every number anywhere in ``meta`` is finite and nothing is nested deeper than
    :data:`MAX_META_DEPTH` (iterative: a deep document cannot exhaust the stack)."""
    stack: list[tuple[object, int, str]] = [(meta, 0, "meta")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_META_DEPTH:
            raise ModelLoadError(f"invalid meta.json: nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(where, "a finite number", value)
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))


def artifact_header(meta: object) -> tuple[str, int, str]:
    """``(model, version, task)`` of metadata, each checked: enough to decide whether an
    artifact is wanted before the rest of it is read."""
    if not isinstance(meta, dict):
        raise _bad("meta", "an object", meta)
    model, version, task = meta.get("model"), meta.get("version"), meta.get("task", TASKS[0])
    if not isinstance(model, str) or not 0 < len(model) <= MAX_NAME_CHARS:
        raise _bad("model", "a model name", model)
    if not _is_int(version) or not 1 <= version <= MAX_VERSION:
        raise _bad("version", "an integer in [1, 2**53]", version)
    if task not in TASKS:
        raise _bad("task", f"one of {TASKS}", task)
    return model, int(version), str(task)


def validate_meta(meta: object) -> NeuralSpec:
    """Check an artifact's metadata (see the module docstring); returns its spec."""
    if not isinstance(meta, dict):
        raise _bad("meta", "an object", meta)
    if meta.get("format") != FORMAT:
        raise ModelLoadError(f"unknown artifact format {meta.get('format')!r}")
    check_finite_tree(meta)
    model, _, _ = artifact_header(meta)
    name = meta.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise _bad("name", f"a printable name of at most {MAX_NAME_CHARS} characters", name)
    if not isinstance(meta.get("weights_sha256"), str) or not _SHA256.match(meta["weights_sha256"]):
        raise _bad("weights_sha256", "64 hexadecimal digits", meta.get("weights_sha256"))
    if not isinstance(meta.get("created_at", ""), str):
        raise _bad("created_at", "a string", meta.get("created_at"))
    spec = check_spec(meta.get("spec"))
    if model != spec.arch:
        raise _bad("model", f"the spec's architecture {spec.arch!r}", model)
    _check_scaler(meta.get("scaler"))
    _check_calibration(meta.get("calibration"), spec)
    confidence = meta.get("confidence")
    if confidence is not None and (not _is_number(confidence) or not 0 <= confidence <= 1):
        raise _bad("confidence", "null or a number in [0, 1]", confidence)
    return spec


def check_spec(data: object) -> NeuralSpec:
    """A spec whose every field is of its type and within its bounds, and whose module
    holds at most :data:`MAX_PARAMETERS` values (counted, not built)."""
    if not isinstance(data, dict):
        raise _bad("spec", "an object", data)
    if data.get("arch") not in ARCHITECTURES:
        raise _bad("spec.arch", f"one of {ARCHITECTURES}", data.get("arch"))
    seq_len = _int(data, "seq_len", 1, MAX_SEQ_LEN, "spec.seq_len")
    _int(data, "horizon", 1, MAX_HORIZON, "spec.horizon")
    _int(data, "channels", CHANNELS, CHANNELS, "spec.channels")
    q = data.get("quantiles")
    if (
        not isinstance(q, list)
        or not 0 < len(q) <= MAX_QUANTILES
        or not all(_is_number(v) and 0 < v < 1 for v in q)
        or any(a >= b for a, b in pairwise(q))
    ):
        raise _bad("spec.quantiles", "increasing numbers in (0, 1)", q)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise _bad("spec.params", "an object", params)
    _check_params(params, seq_len)
    try:
        spec = NeuralSpec.from_dict(data)
        count = parameter_count(spec)
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"invalid meta.json: spec ({exc})") from exc
    if count > MAX_PARAMETERS:
        raise ModelLoadError(
            f"invalid meta.json: the spec needs {count} values, more than {MAX_PARAMETERS}"
        )
    return spec


def _check_params(params: dict[str, Any], seq_len: int) -> None:
    """The settings :func:`~predictor.models.neural.build_member` reads; others (such as
    ``learning_rate``) only need to be finite, which the whole document is."""

    def choice(key: str, options: tuple[str, ...]) -> None:
        if key in params and params[key] not in options:
            raise _bad(f"spec.params.{key}", f"one of {options}", params[key])

    def integer(key: str, lo: int, hi: int) -> None:
        if key in params:
            _int(params, key, lo, hi, f"spec.params.{key}")

    def flag(key: str) -> None:
        if key in params and not isinstance(params[key], bool | None):
            raise _bad(f"spec.params.{key}", "true or false", params[key])

    choice("norm", NORMS)
    choice("level_mean", LEVEL_MEANS)
    flag("level_mix")
    flag("individual")
    integer("ensemble", 1, MAX_ENSEMBLE)
    integer("hidden_size", 1, MAX_HIDDEN_SIZE)
    integer("num_layers", 1, MAX_LAYERS)
    integer("kernel_size", 1, MAX_SEQ_LEN)
    if params.get("level_len") is not None:
        integer("level_len", 1, seq_len)
    windows = params.get("level_windows")
    if windows is not None and not (
        isinstance(windows, list)
        and 1 <= len(windows) <= MAX_LEVEL_WINDOWS
        and all(_is_int(w) and 1 <= w <= seq_len for w in windows)
    ):
        raise _bad(
            "spec.params.level_windows",
            f"1 to {MAX_LEVEL_WINDOWS} integers in [1, {seq_len}]",
            windows,
        )
    dropout = params.get("dropout", 0.0)
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise _bad("spec.params.dropout", "a number in [0, 1)", dropout)


def _check_scaler(data: object) -> None:
    if not isinstance(data, dict):
        raise _bad("scaler", "an object", data)
    mean = _numbers(data.get("mean"), CHANNELS, "scaler.mean")
    std = _numbers(data.get("std"), CHANNELS, "scaler.std")
    if not all(abs(v) <= SCALER_BOUND for v in mean):
        raise _bad("scaler.mean", f"numbers in [-{SCALER_BOUND:g}, {SCALER_BOUND:g}]", mean)
    if not all(0 < v <= SCALER_BOUND for v in std):
        raise _bad("scaler.std", f"numbers in (0, {SCALER_BOUND:g}]", std)


def _check_calibration(data: object, spec: NeuralSpec) -> None:
    if not isinstance(data, list) or len(data) != spec.horizon:
        raise _bad("calibration", f"{spec.horizon} rows (one per horizon step)", data)
    for i, row in enumerate(data):
        values = _numbers(row, spec.channels, f"calibration[{i}]")
        if not all(abs(v) <= CALIBRATION_BOUND for v in values):
            raise _bad(f"calibration[{i}]", f"numbers within ±{CALIBRATION_BOUND:g}", values)
