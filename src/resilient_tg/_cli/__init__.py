"""Subcommands of the ``resilient-tg`` command line (see `resilient_tg.cli`)."""
