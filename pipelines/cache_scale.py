"""Cache bookkeeping at scale: time per batch of :class:`FeatureCache` appends and lookups at 1k … 1M rows.

For each size, a cache file of synthetic rows (random keys, ``dim``-wide features) is built by appending large blocks,
then one *batch* is timed through the public API: append ``batch`` new rows, look up ``2 × batch`` keys (half of them
stored, half absent) and read ``batch`` stored rows.  The median over ``repeats`` batches is reported per size, with
the ratio of the largest size to the smallest; with a per-batch cost that does not grow with the file, the ratio is
near 1.  No model runs, so no weights are involved.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from featurize.cache import FeatureCache
from pipelines.benchmarking import timed, timed_call

__all__ = ["CACHE_SCALE_COLUMNS", "run_cache_scale", "format_cache_scale"]

CACHE_SCALE_COLUMNS = ["rows", "dim", "batch", "repeats", "append_ms", "lookup_ms", "read_ms", "batch_ms"]
_BLOCK = 100_000
_KEY = {"benchmark": "cache-scale"}


def _keys(start: int, stop: int, seed: int) -> list[str]:
    return [hashlib.sha1(f"{seed}-{i}".encode()).hexdigest() for i in range(start, stop)]


def _append(cache: FeatureCache, start: int, stop: int, dim: int, seed: int) -> None:
    keys = _keys(start, stop, seed)
    feats = np.random.default_rng(start).standard_normal((stop - start, dim), dtype=np.float32)
    cache.append(keys, keys, {"x": feats})


def _build(path: Path, n_rows: int, dim: int, seed: int) -> FeatureCache:
    cache = FeatureCache(path, _KEY)
    for start in range(0, n_rows, _BLOCK):
        _append(cache, start, min(n_rows, start + _BLOCK), dim, seed)
    return cache


def _time_batches(cache: FeatureCache, n_rows: int, dim: int, batch: int, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"append_ms": [], "lookup_ms": [], "read_ms": []}
    top = n_rows
    for _ in range(repeats):
        append_s = timed(None, functools.partial(_append, cache, top, top + batch, dim, seed))
        present = rng.choice(top, size=batch, replace=False)
        absent = _keys(10 ** 9 + top, 10 ** 9 + top + batch, seed)
        wanted = [*(_keys(int(i), int(i) + 1, seed)[0] for i in present), *absent]
        lookup_s, rows = timed_call(None, functools.partial(cache.lookup, wanted))
        read_s = timed(None, functools.partial(cache.read, rows[:batch], ["x"]))
        if not (rows[:batch] >= 0).all() or (rows[batch:] >= 0).any():
            raise RuntimeError(f"cache lookup in {cache.path} returned wrong rows")
        top += batch
        times["append_ms"].append(1e3 * append_s)
        times["lookup_ms"].append(1e3 * lookup_s)
        times["read_ms"].append(1e3 * read_s)
    out = {name: float(np.median(values)) for name, values in times.items()}
    out["batch_ms"] = float(np.median(np.sum([times[k] for k in times], axis=0)))
    return out


def run_cache_scale(sizes: Sequence[int] = (1_000, 100_000, 1_000_000), dim: int = 8, batch: int = 32,
                    repeats: int = 7, directory: str | Path | None = None, seed: int = 0) -> pd.DataFrame:
    """Time one batch (append, lookup, read) in cache files of each size.

    Parameters
    ----------
    sizes : sequence of int
        Rows in the file before the timed batches.
    dim : int
        Feature width (one cut point).
    batch : int
        Rows appended and read per batch; ``2 × batch`` keys are looked up (half present).
    repeats : int
        Batches timed per size; medians are reported.
    directory : path-like, optional
        Where the temporary files go (default: a fresh temporary directory, removed afterwards).
    seed : int
        Seeds the keys, features and the keys looked up.

    Returns
    -------
    DataFrame
        One row per size, columns :data:`CACHE_SCALE_COLUMNS` (milliseconds per batch).
    """
    if not sizes or min(sizes) < 2 * batch or batch < 1 or repeats < 1 or dim < 1:
        raise ValueError(f"need sizes >= 2 * batch, batch >= 1, repeats >= 1, dim >= 1; got sizes={list(sizes)}, "
                         f"batch={batch}, repeats={repeats}, dim={dim}")
    rows = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="cache-scale-") as tmp:
        for n_rows in sizes:
            cache = _build(Path(tmp) / f"scale-{n_rows}.h5", int(n_rows), dim, seed)
            cache.lookup(_keys(0, 1, seed))
            rows.append({"rows": int(n_rows), "dim": dim, "batch": batch, "repeats": repeats,
                         **_time_batches(cache, int(n_rows), dim, batch, repeats, seed)})
            cache.path.unlink()
    return pd.DataFrame(rows, columns=CACHE_SCALE_COLUMNS)


def format_cache_scale(df: pd.DataFrame) -> str:
    """The table of :func:`run_cache_scale` with the ratio of the largest file's batch time to the smallest's."""
    first, last = df.iloc[0], df.iloc[-1]
    lines = [f"cache bookkeeping per batch: append {int(first['batch'])} rows + look up {2 * int(first['batch'])} "
             f"keys + read {int(first['batch'])} rows (dim {int(first['dim'])}; median of {int(first['repeats'])})",
             f"{'rows':>10} {'append ms':>10} {'lookup ms':>10} {'read ms':>10} {'batch ms':>10}"]
    lines += [f"{int(r['rows']):>10,} {r['append_ms']:>10.2f} {r['lookup_ms']:>10.2f} {r['read_ms']:>10.2f} "
              f"{r['batch_ms']:>10.2f}" for _, r in df.iterrows()]
    ratio = last["batch_ms"] / first["batch_ms"]
    lines.append(f"ratio {int(last['rows']):,} / {int(first['rows']):,} rows: {ratio:.2f}x")
    return "\n".join(lines)
