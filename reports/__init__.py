"""Statistics, documents, and the analyses that answer the course's questions.

``stats`` (intervals for the fixed-test and resampled designs, paired tests, McNemar, TOST, selection on
training-side scores, crossover), ``analysis`` (one comparison run's statistics, computed once), ``document`` (one
block model rendered to markdown and HTML), ``tables``, ``plots``, ``compare_report``, ``grid_report``, ``answers``
(questions 9–16), and the ``architecture`` package (questions 1–8: conv arithmetic, receptive fields, invariance,
ImageNet probe, fully-convolutional networks; ``python -m reports.architecture``).
"""

from reports.analysis import Analysis, analyse
from reports.answers import course_answers
from reports.compare_report import summary_table, write_report
from reports.document import Block, Document
from reports.grid_report import grid_report
from reports.stats import crossover, paired_comparison, select_best, summarize, two_level_interval

__all__ = [
    "Analysis",
    "Block",
    "Document",
    "analyse",
    "course_answers",
    "crossover",
    "grid_report",
    "paired_comparison",
    "select_best",
    "summarize",
    "summary_table",
    "two_level_interval",
    "write_report",
]
