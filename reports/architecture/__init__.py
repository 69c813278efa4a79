"""The course's architecture questions (Q1–Q8) computed on the real torchvision models, and their report.

- :mod:`~reports.architecture.conv_arith` — Q1: output sizes and weight counts;
- :mod:`~reports.architecture.invariance` — Q2/Q4: translation equivariance and pooling stability, measured;
- :mod:`~reports.architecture.receptive_field` — Q3: analytic and measured receptive fields;
- :mod:`~reports.architecture.imagenet_probe` — Q5: centre crop vs full scene;
- :mod:`~reports.architecture.fcn` — Q6–Q8: fully convolutional VGG/ResNet;
- :mod:`~reports.architecture.report` — runs them all into one document (``python -m reports.architecture``).
"""

from reports.architecture.conv_arith import (
    LayerArithmetic,
    conv_output_size,
    layer_arithmetic,
    layer_table,
    savings_summary,
)
from reports.architecture.fcn import FullyConvolutionalNet, convolutionalize, linear_to_conv, try_stages
from reports.architecture.imagenet_probe import generated_scenes, probe_images, summarize_probe, views
from reports.architecture.invariance import pooling_stability, resize_source, translation_equivariance
from reports.architecture.receptive_field import (
    ReceptiveField,
    effective_receptive_field,
    measure_receptive_field,
    module_receptive_fields,
    receptive_field_table,
)
from reports.architecture.report import ReportConfig, build_report, main

__all__ = [
    "FullyConvolutionalNet",
    "LayerArithmetic",
    "ReceptiveField",
    "ReportConfig",
    "build_report",
    "conv_output_size",
    "convolutionalize",
    "effective_receptive_field",
    "generated_scenes",
    "layer_arithmetic",
    "layer_table",
    "linear_to_conv",
    "main",
    "measure_receptive_field",
    "module_receptive_fields",
    "pooling_stability",
    "probe_images",
    "receptive_field_table",
    "resize_source",
    "savings_summary",
    "summarize_probe",
    "translation_equivariance",
    "try_stages",
    "views",
]
