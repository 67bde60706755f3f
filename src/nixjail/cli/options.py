"""Options every service subcommand shares: where its settings come from."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nixjail.settings import Settings, load_settings


def add_settings_options(parser: argparse.ArgumentParser, *, dirs: bool = True) -> None:
    """`--settings FILE`, and with `dirs` the spool and run dir overrides."""
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help="settings TOML (default: $NIXJAIL_SETTINGS, else built-in)")
    if dirs:
        parser.add_argument("--spool", type=Path, metavar="DIR",
                            help="the spool directory (overrides the settings)")
        parser.add_argument("--run-dir", type=Path, metavar="DIR",
                            help="the runtime directory of leases (overrides the settings)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings file named by the options, with their overrides applied."""
    settings = load_settings(args.settings)
    overrides = {field: value for field, value in
                 (("spool_dir", getattr(args, "spool", None)),
                  ("run_dir", getattr(args, "run_dir", None))) if value is not None}
    return settings.model_copy(update=overrides)


def log_to_stderr() -> None:
    """Services log to stderr, which systemd's journal collects."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
