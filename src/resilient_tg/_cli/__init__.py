"""Subcommands of the ``resilient-tg`` command line (see :mod:`resilient_tg.cli`)."""
