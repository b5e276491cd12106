"""Trace files in, clean request frames out: CSV or JSONL, any schema, any time unit.

:func:`load_trace` reads a BurstGPT file (or any other schema mapped with
``columns``), turns timestamps into float seconds, drops rows it cannot use and
says why in a :class:`LoadReport`. Rows are never reordered except by one
*stable* sort on time, so whole-second ties stay in file order.

>>> mapping = parse_columns("timestamp=TIMESTAMP,request_tokens=ContextTokens")
>>> mapping
{'timestamp': 'TIMESTAMP', 'request_tokens': 'ContextTokens'}
>>> frame = pd.DataFrame({"timestamp_s": [5.0, 45.0, 118.0], "request_tokens": [472, 1087, 417],
...                       "response_tokens": [18, 230, 276]})
>>> sample_contiguous(frame, 2)["timestamp_s"].tolist()
[45.0, 118.0]
>>> next(iter_events(frame))
RequestEvent(timestamp_s=5.0, request_tokens=472, response_tokens=18, model=None, ...)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from predictor.errors import ConfigError, InputError
from predictor.events import MAX_TOKENS, RequestEvent

#: The fields every trace is mapped onto; the first three are required.
CANONICAL = ("timestamp", "request_tokens", "response_tokens", "model", "log_type", "session_id")
REQUIRED = CANONICAL[:3]

#: Columns of the frame :func:`load_trace` returns, in order.
FRAME_COLUMNS = ("timestamp_s", *CANONICAL[1:])

#: Why a row can be dropped, in the order the checks run (a row gets the first that applies).
DROP_REASONS = (
    "missing_value",
    "non_numeric",
    "negative_tokens",
    "absurd_tokens",
    "zero_tokens",
    "duplicate",
)

TIME_UNITS = ("auto", "s", "ms", "datetime")

#: With ``time_unit="auto"``, numeric timestamps whose median is above this are milliseconds
#: (1e11 s is the year 5138; 1e11 ms is 1973).
EPOCH_MS_THRESHOLD = 1e11

#: Other names a column is recognised by, besides the canonical name and BurstGPT's spelling
#: (matched ignoring case, spaces, dashes and underscores: ``Request tokens`` is
#: ``request_tokens``). ``timestamp_s`` lets a loaded frame written back out load again.
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp_s",),
    "request_tokens": ("ContextTokens",),
    "response_tokens": ("GeneratedTokens",),
}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_trace` saw: rows read, kept, dropped by reason, span and mix.

    ``zero_token_rows`` (request and response both 0) and ``failed_rows`` (response 0,
    BurstGPT's definition of a failure) are counted over the rows whose values parsed,
    before duplicates and ``drop_failed`` are applied, so they describe the file whatever
    the options. ``reordered`` counts rows that came earlier in the file than their time
    says (a timestamp below one already seen); they are moved by a stable sort, not dropped.
    """

    path: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int]
    reordered: int
    zero_token_rows: int
    failed_rows: int
    span_start_s: float | None
    span_end_s: float | None
    span_s: float
    by_model: dict[str, int]
    by_log_type: dict[str, int]
    time_unit: str
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.rows_read == self.rows_kept + sum(self.dropped.values()), self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return asdict(self)


def parse_columns(spec: str | None) -> dict[str, str]:
    """``timestamp=TIMESTAMP,request_tokens=ContextTokens`` -> canonical field -> file column.

    >>> parse_columns(None)
    {}
    >>> parse_columns("tokens=x")
    Traceback (most recent call last):
    ...
    predictor.errors.ConfigError: unknown field 'tokens' in --columns; known fields: ...
    """
    if spec is None or not spec.strip():
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        canon, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not canon or not column:
            raise ConfigError(f"bad --columns item {item.strip()!r}: expected FIELD=COLUMN")
        _check_field(canon)
        if canon in mapping:
            raise ConfigError(f"field {canon!r} is mapped twice in --columns")
        mapping[canon] = column
    return mapping


def _check_field(canon: str) -> None:
    if canon not in CANONICAL:
        raise ConfigError(
            f"unknown field {canon!r} in --columns; known fields: {', '.join(CANONICAL)}"
        )


def load_trace(
    path: str | Path,
    columns: Mapping[str, str] | str | None = None,
    time_unit: str = "auto",
    drop_failed: bool = False,
) -> tuple[pd.DataFrame, LoadReport]:
    """Read, clean and time-sort a trace; see the module docstring and :class:`LoadReport`."""
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"unknown time unit {time_unit!r}; use one of {', '.join(TIME_UNITS)}")
    if isinstance(columns, Mapping):
        for canon in columns:
            _check_field(canon)
        mapping = dict(columns)
    else:
        mapping = parse_columns(columns)
    path = Path(path)
    raw = _read_table(path)
    resolved = _resolve_columns([str(c) for c in raw.columns], mapping, path)
    n = len(raw)

    missing = np.zeros(n, dtype=bool)
    for canon in REQUIRED:
        missing |= _blank(raw[resolved[canon]])
    ts, unit = _parse_time(raw[resolved["timestamp"]], time_unit, missing, path)
    req = _numbers(raw[resolved["request_tokens"]])
    resp = _numbers(raw[resolved["response_tokens"]])

    bad_number = ~np.isfinite(ts) | ~np.isfinite(req) | ~np.isfinite(resp)
    with np.errstate(invalid="ignore"):
        bad_number |= (req != np.round(req)) | (resp != np.round(resp))
        reason = np.full(n, "", dtype=object)
        _assign(reason, missing, "missing_value")
        _assign(reason, bad_number, "non_numeric")
        _assign(reason, (req < 0) | (resp < 0), "negative_tokens")
        _assign(reason, (req > MAX_TOKENS) | (resp > MAX_TOKENS), "absurd_tokens")
    valid = reason == ""
    zero_rows = int(np.sum(valid & (req == 0) & (resp == 0)))
    failed_rows = int(np.sum(valid & (resp == 0)))
    if drop_failed:
        _assign(reason, resp == 0, "zero_tokens")
    keep = reason == ""

    frame = pd.DataFrame(
        {
            "timestamp_s": ts[keep].astype(np.float64),
            "request_tokens": req[keep].astype(np.int64),
            "response_tokens": resp[keep].astype(np.int64),
        }
    )
    for canon in CANONICAL[3:]:
        col = raw[resolved[canon]][keep] if canon in resolved else None
        frame[canon] = _strings(col, len(frame))
    duplicate = frame.duplicated(keep="first").to_numpy()
    reason[np.flatnonzero(keep)[duplicate]] = "duplicate"
    keep = reason == ""
    frame = frame[~duplicate]

    times = frame["timestamp_s"].to_numpy()
    reordered = int(np.sum(times[1:] < np.maximum.accumulate(times)[:-1])) if len(times) else 0
    frame = frame.sort_values("timestamp_s", kind="stable").reset_index(drop=True)
    counts = pd.Series(reason[~keep]).value_counts() if (~keep).any() else pd.Series(dtype=int)
    start = float(frame["timestamp_s"].iloc[0]) if len(frame) else None
    end = float(frame["timestamp_s"].iloc[-1]) if len(frame) else None
    report = LoadReport(
        path=str(path),
        rows_read=n,
        rows_kept=len(frame),
        dropped={r: int(counts.get(r, 0)) for r in DROP_REASONS},
        reordered=reordered,
        zero_token_rows=zero_rows,
        failed_rows=failed_rows,
        span_start_s=start,
        span_end_s=end,
        span_s=(end - start) if start is not None and end is not None else 0.0,
        by_model=_mix(frame["model"]) if "model" in resolved else {},
        by_log_type=_mix(frame["log_type"]) if "log_type" in resolved else {},
        time_unit=unit,
        columns=dict(resolved),
    )
    return frame, report


def sample_contiguous(
    df: pd.DataFrame, n: int | None, mode: str = "recent", seed: int = 0
) -> pd.DataFrame:
    """A contiguous block of ``n`` rows: the most recent, or (``mode="random"``) a seeded one.

    Never a row sample: forecasting needs consecutive requests. ``n`` None or at least
    ``len(df)`` returns the whole frame.
    """
    if mode not in ("recent", "random"):
        raise ConfigError(f"unknown sample mode {mode!r}; use 'recent' or 'random'")
    if n is not None and n <= 0:
        raise ConfigError(f"sample size must be positive, got {n}")
    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    start = len(df) - n
    if mode == "random":
        start = int(np.random.default_rng(seed).integers(0, len(df) - n + 1))
    return df.iloc[start : start + n].reset_index(drop=True)


def iter_events(df: pd.DataFrame) -> Iterator[RequestEvent]:
    """The rows of a loaded frame as :class:`~predictor.events.RequestEvent`, in order."""
    n = len(df)
    optional = [
        [_opt(v) for v in df[c].tolist()] if c in df.columns else [None] * n
        for c in FRAME_COLUMNS[3:]
    ]
    for ts, rq, rs, model, log_type, session in zip(
        df["timestamp_s"].to_numpy(np.float64).tolist(),
        df["request_tokens"].to_numpy(np.int64).tolist(),
        df["response_tokens"].to_numpy(np.int64).tolist(),
        *optional,
        strict=True,
    ):
        yield RequestEvent(ts, rq, rs, model, log_type, session)


def fingerprint(df: pd.DataFrame) -> str:
    """Short sha256 of a loaded frame's columns (for model metadata: what it was trained on).

    >>> f = pd.DataFrame({"timestamp_s": [1.0], "request_tokens": [2], "response_tokens": [3]})
    >>> len(fingerprint(f)), fingerprint(f) == fingerprint(f.copy())
    (16, True)
    """
    h = hashlib.sha256(f"rows={len(df)}".encode())
    for col, dtype in zip(FRAME_COLUMNS[:3], (np.float64, np.int64, np.int64), strict=True):
        h.update(col.encode())
        h.update(np.ascontiguousarray(df[col].to_numpy(dtype)).tobytes())
    for col in FRAME_COLUMNS[3:]:
        if col in df.columns:
            h.update(col.encode())
            h.update("\x1f".join("\x00" if _opt(v) is None else str(v) for v in df[col]).encode())
    return h.hexdigest()[:16]


# -- reading -----------------------------------------------------------------------------


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"trace file not found: {path}")
    if path.is_dir():
        raise InputError(f"trace path is a directory, not a file: {path}")
    try:
        if _is_json(path):
            return _read_json(path)
        return pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"trace file is empty: {path}") from exc
    except pd.errors.ParserError as exc:
        raise InputError(f"cannot parse {path} as CSV: {str(exc).strip()[:200]}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise InputError(f"cannot read trace file {path}: {exc.strerror or exc}") from exc


def _is_json(path: Path) -> bool:
    if path.suffix.lower() in _JSON_SUFFIXES:
        return True
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return False
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] in (b"{", b"[")


def _read_json(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise pd.errors.EmptyDataError("empty")
    if text.lstrip()[:1] == "[":
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
        rows = list(enumerate(records if isinstance(records, list) else [records], 1))
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
    for where, obj in rows:
        if not isinstance(obj, dict):
            raise InputError(f"{path}: record {where} is {type(obj).__name__}, not an object")
    return pd.DataFrame.from_records([obj for _, obj in rows])


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def _resolve_columns(found: list[str], mapping: dict[str, str], path: Path) -> dict[str, str]:
    absent = [f"{canon}={col}" for canon, col in mapping.items() if col not in found]
    if absent:
        raise InputError(
            f"{path}: --columns names column(s) not in the file: {', '.join(absent)}; "
            f"found: {', '.join(found)}"
        )
    resolved = dict(mapping)
    free = [c for c in found if c not in mapping.values()]
    for canon in CANONICAL:
        if canon in resolved:
            continue
        wanted = [_norm(name) for name in (canon, *_ALIASES.get(canon, ()))]
        for want in wanted:
            hit = next((c for c in free if _norm(c) == want), None)
            if hit is not None:
                resolved[canon] = hit
                break
    lacking = [c for c in REQUIRED if c not in resolved]
    if lacking:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(lacking)}; "
            f"found: {', '.join(found) or 'none'}; map them with --columns, e.g. "
            + ",".join(f"{c}=COLUMN" for c in lacking)
        )
    return {c: resolved[c] for c in CANONICAL if c in resolved}


# -- parsing ------------------------------------------------------------------------------


def _blank(col: pd.Series) -> np.ndarray:
    text = col.astype(object).where(col.notna(), "").astype(str)
    return (col.isna() | text.str.strip().eq("")).to_numpy(dtype=bool)


def _numbers(col: pd.Series) -> np.ndarray:
    values = pd.to_numeric(col.astype(object), errors="coerce")
    return np.asarray(values, dtype=np.float64)


def _parse_time(
    col: pd.Series, unit: str, missing: np.ndarray, path: Path
) -> tuple[np.ndarray, str]:
    numeric = _numbers(col)
    present = int(np.sum(~missing))
    if unit == "auto":
        parsed = np.isfinite(numeric) & ~missing
        if present and parsed.sum() * 2 < present:
            unit = "datetime"
        elif parsed.any() and np.median(np.abs(numeric[parsed])) > EPOCH_MS_THRESHOLD:
            unit = "ms"
        else:
            unit = "s"
    if unit == "s":
        seconds = numeric
    elif unit == "ms":
        seconds = numeric / 1000.0
    else:
        text = col.astype(object).where(col.notna(), None).astype(str)
        stamp = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        if stamp.isna().all() and present:
            stamp = pd.to_datetime(text, format="mixed", errors="coerce", utc=True)
        seconds = ((stamp - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    if present and not np.isfinite(seconds[~missing]).any():
        raise InputError(
            f"{path}: no timestamp parses as {unit!r} (first value {col.iloc[0]!r}); "
            f"try --time-unit {'datetime' if unit != 'datetime' else 's'}"
        )
    return seconds, unit


def _assign(reason: np.ndarray, mask: np.ndarray, label: str) -> None:
    reason[(reason == "") & mask] = label


def _opt(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _strings(col: pd.Series | None, n: int) -> pd.Series:
    out = np.full(n, None, dtype=object)
    if col is not None:
        blank = _blank(col)
        values = col.astype(object).to_numpy()
        out[~blank] = [str(v) for v in values[~blank]]
    return pd.Series(out, dtype=object)


def _mix(col: pd.Series) -> dict[str, int]:
    counts = col.fillna("(none)").value_counts()
    return {str(k): int(v) for k, v in counts.items()}
