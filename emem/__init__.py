"""Interfaces layer: the ``emem`` command line, experiments, reports and benchmarks glue."""
