"""Off-the-shelf CNN features + classical heads vs fine-tuning, on one dataset, over repeated paired splits.

``python -m pipelines.compare`` (no arguments) runs the default comparison on the embedded demo set and writes
``results.csv``, ``predictions.csv``, ``summary.md``, ``report.html``, plots and ``manifest.json`` into ``--out``.
Every finished fit is journaled as it completes (``journal.jsonl``): the same command run again after a crash skips
the finished fits.

``config`` (the settings, light), ``plan`` (checks and the list of fits), ``runner`` (running and journaling them),
``manifest`` (environment), ``run`` (:func:`run_compare`), ``export`` (the pre-selected configuration refitted and
saved with its card, ``--export``) and ``cli`` (the command).  Names are imported on first use.
"""

from featurize.lazy import lazy_exports

__getattr__, _NAMES = lazy_exports(__name__, {
    "pipelines.compare.config": ("CompareConfig", "DEFAULT_BACKBONES", "DEFAULT_METHODS", "default_backbones",
        "finetune_backbones", "finetune_image_size", "finetune_split_count", "protocol_overrides"),
    "pipelines.compare.plan": ("Job", "build_settings", "cuts_for", "fit_seed", "plan", "validate"),
    "pipelines.compare.run": ("CompareResult", "run_compare"),
    "pipelines.compare.cli": ("build_parser", "config_from_args", "main"),
    "pipelines.compare.export": ("choose_export", "export_model"),
    "pipelines.results": ("RESULT_COLUMNS",),
})


__all__ = sorted(_NAMES)
