"""Data sets and experiments.

``datasets`` (the demo, hymenoptera, image folders, CSV files), ``download`` (resumable, validated, safely
extracted), ``splits`` (repeated training draws and the two evaluation designs), ``methods`` (the table of methods a
comparison runs), ``results`` (the row schema of a fit and the journal that makes runs resumable), ``compare``
(``python -m pipelines.compare``), ``protocols`` (its presets), ``grid`` (``python -m pipelines.grid``), ``bench``
(``python -m pipelines.bench``, with ``bench_suite`` and ``cache_scale``) and ``cli`` (the options, exit codes,
logging and Dask backend every command shares).
"""

from importlib import import_module

_EXPORTS = {
    "CompareConfig": "compare", "CompareResult": "compare", "run_compare": "compare",
    "ImageSet": "datasets", "load_dataset": "datasets",
    "GridResult": "grid", "run_grid": "grid",
    "METHODS": "methods", "Method": "methods", "get_method": "methods", "list_methods": "methods",
    "register_method": "methods",
    "PROTOCOLS": "protocols", "Protocol": "protocols",
    "RESULT_COLUMNS": "results", "Fit": "results", "Journal": "results",
    "Split": "splits", "repeated_splits": "splits",
}


def __getattr__(name: str):
    """Public names, imported on first use (so ``python -m pipelines.compare`` does not import itself twice)."""
    if name in _EXPORTS:
        return getattr(import_module(f"pipelines.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
