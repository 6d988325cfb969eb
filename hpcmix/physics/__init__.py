"""Vectorised physics on event arrays: selection, detector smearing, features."""
