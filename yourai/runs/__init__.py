"""Runs you can compare: the run record (run.json), the registry of runs, comparisons, sweeps and the report page.

This layer sits above the stage notebooks' helpers and below the pipeline: it composes training and
evaluation into recorded runs and sweeps, and the pipeline writes its records and report through it.
"""
