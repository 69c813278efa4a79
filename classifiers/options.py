"""The names of the fine-tuning options (strategies, BatchNorm modes, head initialisations), in a module that imports
nothing: commands list them in ``--help`` before torch is imported."""

__all__ = ["BN_MODES", "HEAD_INITS", "STRATEGIES"]

STRATEGIES = ("head", "last_block", "last:k", "full")
"""Which stages a fine-tuning strategy trains (see :mod:`classifiers.surgery`)."""

BN_MODES = ("frozen", "train")
"""What BatchNorm layers do while a network trains (see :class:`classifiers.training.Trainer`)."""

HEAD_INITS = ("probe", "random")
"""How the new head starts when stages are unfrozen: the fitted linear probe (LP-FT) or a random ``Linear``."""
