"""Interfaces layer: the ``emem`` command line, experiments, reports and benchmarks glue."""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see spatial_memory/__init__.py
