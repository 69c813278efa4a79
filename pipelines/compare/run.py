"""``run_compare``: one comparison from its configuration to its written outputs (tables, report, manifest)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from featurize.backbones import get_backbone_spec, resolve_weights
from featurize.cli import resolve_backbone_weights
from featurize.devices import resolve_device
from pipelines.compare.config import (CompareConfig, finetune_split_count, protocol_overrides, resolve_backbones,
                                         results_config)
from pipelines.compare.manifest import environment, same_training_sets
from pipelines.compare.plan import plan, validate
from pipelines.compare.runner import BackboneRun, Runner, decode_all, drop_unreadable, extract, progress
from pipelines.datasets import default_data_dir, load_dataset
from pipelines.protocols import protocol
from pipelines.results import Fit, Journal, dataset_fingerprint, tables
from pipelines.splits import DESIGNS, default_train_sizes, imageset_design, repeated_splits

__all__ = ["CompareResult", "run_compare"]

log = logging.getLogger(__name__)


@dataclass
class CompareResult:
    """What :func:`run_compare` produced: ``results`` (one row per configuration × split), ``predictions``,
    ``meta`` (the manifest), ``paths`` of the written files and the ``analysis`` (:class:`reports.analysis.Analysis`)
    the report was written from."""

    results: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict
    paths: dict[str, Path]
    analysis: object = None


def run_compare(config: CompareConfig) -> CompareResult:
    """Run the comparison and write every output file into ``config.out``.

    Parameters
    ----------
    config : CompareConfig

    Returns
    -------
    CompareResult

    Raises
    ------
    ValueError
        For unknown backbones, cut points or methods, train sizes the dataset cannot provide, or an output folder
        holding the journal of another configuration (``restart`` discards it).
    FileNotFoundError
        When explicitly requested pretrained weights are missing.
    """
    from reports.analysis import analyse
    from reports.compare_report import summary_table, write_report

    config = resolve_backbones(config)
    validate(config)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    wall = time.perf_counter()
    out = Path(config.out)
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    cache_dir = Path(config.cache_dir) if config.cache_dir else data_dir / "features"
    device = str(resolve_device(config.device))
    imageset = load_dataset(config.dataset, data_dir=data_dir, verbose=not config.quiet)
    bad, pixels = decode_all(imageset.items)
    unreadable = [str(imageset.items[i]) for i in np.flatnonzero(bad)]
    if bad.any():
        imageset, pixels = drop_unreadable(imageset, bad), pixels[~bad]

    runs = {}
    for backbone in config.backbones:
        weights = resolve_backbone_weights(backbone, config.weights, config.weights_dir)
        runs[backbone] = BackboneRun(backbone, weights, resolve_weights(get_backbone_spec(backbone), weights))
    identity = {"dataset_content": dataset_fingerprint(imageset.items, imageset.labels),
                "weights_resolved": {b: run.resolved.identity for b, run in runs.items()},
                "preprocessing": {b: run.resolved.preprocessing.identity() for b, run in runs.items()}}
    journal = Journal(out, {**results_config(config), **identity}, restart=config.restart)
    sizes = default_train_sizes(imageset) if config.train_sizes is None else config.train_sizes
    splits = list(repeated_splits(imageset, sizes, config.splits, config.seed))
    n_finetune = finetune_split_count(config)
    jobs = plan(config, splits, n_finetune)
    pending = [job for job in jobs if asdict(job.key(config.pooling)) not in journal]
    for backbone in {job.backbone for job in pending if job.method.inputs == "features"}:
        extract(config, runs[backbone], imageset.items, cache_dir, device)

    runner = Runner(config, imageset, runs, pixels, cache_dir, device)
    for fit in progress(runner.execute(pending, config.n_jobs), len(jobs), len(jobs) - len(pending), config.quiet):
        journal.record(fit.to_json())
    if runner.unconverged:
        log.info("%d fit(s) met a ConvergenceWarning inside their inner-CV grid (solvers at extreme penalties); the "
                 "selected hyperparameters are in results.csv", runner.unconverged)
    fits = [Fit.from_json(journal[asdict(job.key(config.pooling))]) for job in jobs]
    results, predictions = tables(fits, imageset, {(s.train_size, s.split): s for s in splits})
    meta = {
        "dataset": imageset.name,
        "dataset_root": str(imageset.root),
        "n_images": len(imageset.items),
        "n_classes": len(imageset.classes),
        "classes": imageset.classes,
        "class_counts": {k: int(v) for k, v in imageset.class_counts().items()},
        "unreadable_images": unreadable,
        "design": imageset_design(imageset),
        "design_description": DESIGNS[imageset_design(imageset)],
        "protocol": config.protocol,
        "protocol_description": protocol(config.protocol).description,
        "protocol_overrides": protocol_overrides(config),
        "train_sizes": list(dict.fromkeys(split.train_size for split in splits)),
        "same_training_set_sizes": same_training_sets(splits),
        "seeds": {"base": config.seed, "splits": config.splits, "finetune_splits": n_finetune,
                  "per_fit": "fit_seed(base, split, method)"},
        "weights": {b: run.resolved.identity for b, run in runs.items()},
        "weights_labels": {b: run.resolved.label for b, run in runs.items()},
        "pretrained": {b: run.weights is not None for b, run in runs.items()},
        "device": device,
        "command": config.command,
        "config": {k: v for k, v in asdict(config).items() if k != "command"},
        "environment": environment(),
        "resumed_fits": len(jobs) - len(pending),
        "started": started,
    }
    results.to_csv(out / "results.csv", index=False)
    predictions.to_csv(out / "predictions.csv", index=False)
    meta["wall_time_s"] = round(time.perf_counter() - wall, 1)
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    paths = {"results_csv": out / "results.csv", "predictions_csv": out / "predictions.csv"}
    analysis = analyse(results, predictions, meta)
    paths.update(write_report(results, predictions, meta, out, analysis=analysis))
    (out / "manifest.json").write_text(json.dumps(meta, indent=2, default=str))
    paths["manifest"] = out / "manifest.json"
    if config.export:
        from pipelines.compare.export import export_model

        paths["model_card"] = export_model(config, analysis, imageset, {b: run.weights for b, run in runs.items()},
                                           config.export, config.export_config, cache_dir=cache_dir)
    meta["summary"] = summary_table(results, analysis.summary)
    return CompareResult(results, predictions, meta, paths, analysis)


