"""The ``advkit`` command line."""
