"""``python -m pipelines.predict MODEL_DIR IMAGES... [--out predictions.csv]``: label new images with an exported
model (see :mod:`pipelines.exported`; the command is :mod:`pipelines.predict.cli`)."""
