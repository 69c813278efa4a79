"""The course's architecture questions (Q1–Q8) computed on the real torchvision models, and their report.

- :mod:`~reports.architecture.conv_arith` — Q1: output sizes and weight counts;
- :mod:`~reports.architecture.invariance` — Q2/Q4: translation equivariance and pooling stability, measured;
- :mod:`~reports.architecture.receptive_field` — Q3: analytic and measured receptive fields;
- :mod:`~reports.architecture.imagenet_probe` — Q5: centre crop vs full scene;
- :mod:`~reports.architecture.fcn` — Q6–Q8: fully convolutional VGG/ResNet;
- :mod:`~reports.architecture.report` — runs them all into one document (:mod:`~reports.architecture.sections`,
  :mod:`~reports.architecture.figures`, :mod:`~reports.architecture.inputs`);
- :mod:`~reports.architecture.cli` — ``python -m reports.architecture``.

The public names below are imported on first use, so that the command answers ``--help`` without importing torch.
"""

from featurize.lazy import lazy_exports

__getattr__, _NAMES = lazy_exports(__name__, {
    "reports.architecture.conv_arith": ("LayerArithmetic", "conv_output_size", "layer_arithmetic", "layer_table",
        "savings_summary"),
    "reports.architecture.fcn": ("FullyConvolutionalNet", "convolutionalize", "linear_to_conv", "try_stages"),
    "reports.architecture.imagenet_probe": ("generated_scenes", "probe_images", "summarize_probe", "views"),
    "reports.architecture.invariance": ("pooling_stability", "resize_source", "translation_equivariance"),
    "reports.architecture.receptive_field": ("ReceptiveField", "effective_receptive_field",
        "measure_receptive_field", "module_receptive_fields", "receptive_field_table"),
    "reports.architecture.config": ("ReportConfig",),
    "reports.architecture.report": ("build_report",),
    "reports.architecture.cli": ("main",),
})


__all__ = sorted(_NAMES)
