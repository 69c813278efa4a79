"""Data sets and experiments.

``datasets`` (the demo, hymenoptera, image folders, CSV files), ``download`` (resumable, validated, safely
extracted), ``splits`` (repeated training draws and the two evaluation designs), ``methods`` (the table of methods a
comparison runs), ``results`` (the row schema of a fit and the journal that makes runs resumable), ``compare``
(``python -m pipelines.compare``, its export of the pre-selected model), ``exported`` and ``predict`` (using an
exported model, ``python -m pipelines.predict``), ``protocols`` (the comparison's presets), ``grid`` and
``grid_search`` (``python -m pipelines.grid``), ``bench`` (``python -m pipelines.bench``, with ``benchmarking``,
``bench_suite``, ``bench_extract``, ``bench_head``, ``bench_finetune`` and ``cache_scale``) and ``backend`` (the
Dask backend of the parallel fits).  The options every command shares are :mod:`featurize.cli`'s.
"""

from importlib import import_module

_EXPORTS = {
    "CompareConfig": "compare", "CompareResult": "compare", "run_compare": "compare",
    "ImageSet": "datasets", "load_dataset": "datasets",
    "GridConfig": "grid", "GridResult": "grid", "run_grid": "grid",
    "ExportedModel": "exported", "load_exported": "exported",
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
