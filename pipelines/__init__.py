"""Data sets and experiments.

``datasets`` (the demo, hymenoptera, image folders, CSV files), ``download`` (resumable, validated, safely
extracted), ``splits`` (repeated training draws and the two evaluation designs), ``methods`` (the table of methods a
comparison runs), ``results`` (the row schema of a fit and the journal that makes runs resumable), ``compare``
(``python -m pipelines.compare``), ``grid`` (``python -m pipelines.grid``) and ``cli`` (the options, exit codes and
logging every command shares).
"""

from pipelines.compare import PROTOCOLS, CompareConfig, CompareResult, run_compare
from pipelines.datasets import ImageSet, load_dataset
from pipelines.grid import GridResult, run_grid
from pipelines.methods import METHODS, Method, get_method, list_methods, register_method
from pipelines.results import RESULT_COLUMNS, Fit, Journal
from pipelines.splits import Split, repeated_splits

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "RESULT_COLUMNS",
    "CompareConfig",
    "CompareResult",
    "Fit",
    "GridResult",
    "ImageSet",
    "Journal",
    "Method",
    "Split",
    "get_method",
    "list_methods",
    "load_dataset",
    "register_method",
    "repeated_splits",
    "run_compare",
    "run_grid",
]
