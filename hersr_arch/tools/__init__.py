"""Tools behind the ``hersr`` command (result tables, ...), importable without the CLI."""
