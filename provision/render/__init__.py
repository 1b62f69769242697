"""Rendering a report or an input failure: text, JSON, JUnit, GitHub Actions, progress.

Pure functions of a :class:`~provision.results.Report` returning ``str``; only
``outputs`` writes (the CI files and the progress line).
"""
