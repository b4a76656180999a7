"""Experiment sweeps: a grid of ordinary ``python -m train`` runs, one folder each.

:mod:`train.sweeps.grid` expands a grid into jobs and shards it, :mod:`train.sweeps.presets`
holds the paper's settings (Tables 1-13), :mod:`train.sweeps.runner` decides what each folder
needs (skip, resume, run) and runs the jobs. The CLI is :mod:`train.sweep`; the report is
:mod:`train.report`.
"""
