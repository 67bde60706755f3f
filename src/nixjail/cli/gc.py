"""`nixjail gc`: delete old ended submissions, drop nixjail's old GC roots,
then collect the store's garbage.

Submissions that ended more than `gc.submission_max_age_s` ago (30 days)
are deleted from the spool, records and all.

Roots are symlinks under `gc.roots_dir` (the cache builder's environments, the
runner's running submissions). A root not re-added for `gc.root_max_age_s` is
removed; younger roots, and every root outside nixjail, keep what they reach.
The roots of catalog environments (`cache_builder.roots_dir/catalog/`) are
never aged out: the cache builder replaces them when the catalog changes.
Once any root is removed, no environment built before is reused without
the cache builders (`cache_builder.reuse_built_s`).
Run it from a timer.
"""

from __future__ import annotations

import argparse

from nixjail import nix
from nixjail.cli.options import add_settings_options
from nixjail.expiry import delete_old_submissions
from nixjail.settings import load_settings
from nixjail.spool import Spool


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gc", help="remove old environment roots and collect the Nix store's garbage",
        description="Remove nixjail's GC roots older than gc.root_max_age_s, then run the "
        "Nix garbage collector on gc.store (optionally only up to gc.max_freed_mib).")
    add_settings_options(parser, dirs=False)
    parser.add_argument("--max-age", type=float, metavar="S",
                        help="remove roots older than S seconds (overrides settings)")
    parser.add_argument("--max-freed", type=int, metavar="MIB",
                        help="stop after freeing MIB MiB (overrides settings)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    everything = load_settings(args.settings)
    deleted = delete_old_submissions(everything)
    if deleted:
        print(f"deleted {len(deleted)} submissions that ended more than "
              f"{everything.gc.submission_max_age_s:g} s ago")
    settings = everything.gc
    max_age = args.max_age if args.max_age is not None else settings.root_max_age_s
    max_freed = args.max_freed if args.max_freed is not None else settings.max_freed_mib
    report = nix.collect_garbage(
        settings.store, roots_dir=settings.roots_dir, max_root_age_s=max_age,
        max_freed_bytes=max_freed * 1024 * 1024 if max_freed is not None else None,
        keep_dirs=(everything.cache_builder.roots_dir / nix.CATALOG_ROOTS,))
    for root in report.removed_roots:
        print(f"removed the root {root}")
    if report.removed_roots:
        # What a removed root held may be gone now: submissions go through
        # the cache builders again, which build or find it and root it anew.
        Spool.from_settings(everything).forget_built()
    print(f"kept {report.kept_roots} roots; deleted {report.deleted_paths} store paths, "
          f"freed {report.freed_bytes / (1024 * 1024):.1f} MiB")
    return 0
