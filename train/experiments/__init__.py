"""Experiments: sweeps of ordinary ``python -m train`` runs, one folder each, and their report.

:mod:`.grid` expands a grid into jobs and shards it, :mod:`.presets` holds the paper's settings
(Tables 1-13), :mod:`.runner` decides what each folder needs (skip, resume, run) and runs the
jobs, :mod:`.sweep` is the command (``python -m train.sweep``). :mod:`.report` aggregates the
folders into tables and curves with :mod:`.stats` (Welch and paired t-tests) against
:mod:`.paper_results` (the paper's published figures); :mod:`.table` renders a table as
Markdown, CSV or LaTeX, for the report and for ``profiling`` alike. The training core imports
nothing from here; this package, :mod:`.table`, :mod:`.report`, :mod:`.stats` and
:mod:`.paper_results` import no torch.
"""
