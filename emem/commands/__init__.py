"""``emem`` command groups; see emem/cli.py."""
