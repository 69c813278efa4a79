"""Off-the-shelf CNN features + classical heads vs fine-tuning, on one dataset, over repeated paired splits.

``python -m pipelines.compare`` (no arguments) runs the default comparison on the embedded demo set and writes
``results.csv``, ``predictions.csv``, ``summary.md``, ``report.html``, plots and ``manifest.json`` into ``--out``.
Every finished fit is journaled as it completes (``journal.jsonl``): the same command run again after a crash skips
the finished fits.

``config`` (the settings, light), ``plan`` (checks and the list of fits), ``runner`` (running and journaling them),
``manifest`` (environment), ``run`` (:func:`run_compare`), ``export`` (the pre-selected configuration refitted and
saved with its card, ``--export``) and ``cli`` (the command).  Names are imported on first use.
"""

from importlib import import_module

_EXPORTS = {
    "CompareConfig": "config", "DEFAULT_BACKBONES": "config", "DEFAULT_METHODS": "config",
    "default_backbones": "config", "finetune_backbones": "config", "finetune_image_size": "config",
    "finetune_split_count": "config", "protocol_overrides": "config",
    "Job": "plan", "build_settings": "plan", "cuts_for": "plan", "fit_seed": "plan", "plan": "plan",
    "validate": "plan",
    "CompareResult": "run", "run_compare": "run",
    "build_parser": "cli", "config_from_args": "cli", "main": "cli",
    "choose_export": "export", "export_model": "export",
    "RESULT_COLUMNS": "results",
}


def __getattr__(name: str):
    """Public names, imported on first use (``--help`` is answered before torch is imported)."""
    if name in _EXPORTS:
        package = "pipelines" if _EXPORTS[name] == "results" else "pipelines.compare"
        return getattr(import_module(f"{package}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pipelines.compare' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
