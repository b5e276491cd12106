"""One module per ``reqcast`` subcommand, each with ``add_parser`` and ``run``."""
