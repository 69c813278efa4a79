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

from importlib import import_module

_EXPORTS = {
    "LayerArithmetic": "conv_arith", "conv_output_size": "conv_arith", "layer_arithmetic": "conv_arith",
    "layer_table": "conv_arith", "savings_summary": "conv_arith",
    "FullyConvolutionalNet": "fcn", "convolutionalize": "fcn", "linear_to_conv": "fcn", "try_stages": "fcn",
    "generated_scenes": "imagenet_probe", "probe_images": "imagenet_probe", "summarize_probe": "imagenet_probe",
    "views": "imagenet_probe",
    "pooling_stability": "invariance", "resize_source": "invariance", "translation_equivariance": "invariance",
    "ReceptiveField": "receptive_field", "effective_receptive_field": "receptive_field",
    "measure_receptive_field": "receptive_field", "module_receptive_fields": "receptive_field",
    "receptive_field_table": "receptive_field",
    "ReportConfig": "config", "build_report": "report", "main": "cli",
}


def __getattr__(name: str):
    """Public names, imported on first use."""
    if name in _EXPORTS:
        return getattr(import_module(f"reports.architecture.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'reports.architecture' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
