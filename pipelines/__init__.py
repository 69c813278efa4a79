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

from featurize.lazy import lazy_exports

__getattr__, _NAMES = lazy_exports(__name__, {
    "pipelines.compare": ("CompareConfig", "CompareResult", "run_compare"),
    "pipelines.datasets": ("ImageSet", "load_dataset"),
    "pipelines.grid": ("GridConfig", "GridResult", "run_grid"),
    "pipelines.exported": ("ExportedModel", "load_exported"),
    "pipelines.methods": ("METHODS", "Method", "get_method", "list_methods", "register_method"),
    "pipelines.protocols": ("PROTOCOLS", "Protocol"),
    "pipelines.results": ("RESULT_COLUMNS", "Fit", "Journal"),
    "pipelines.splits": ("Split", "repeated_splits"),
})


__all__ = sorted(_NAMES)
