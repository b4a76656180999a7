"""Cost of POSD against teacher-based KD: the paper's Tables 14-17 (see docs/profiling.md).

Library API (the CLI ``python -m profiling.tables`` wraps it)::

    from profiling import count_macs, count_params, storage_report, training_memory
"""
from profiling.complexity import count_macs, count_params  # noqa: F401
from profiling.memory import training_memory  # noqa: F401
from profiling.storage import storage_report  # noqa: F401

__all__ = ["count_macs", "count_params", "storage_report", "training_memory"]
