"""classifiers: see README."""
