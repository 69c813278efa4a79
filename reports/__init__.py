"""reports: see README."""
