"""Reference implementations and benchmark helpers (not part of the installed runtime)."""
