"""Recovery of abandoned work: one pass, the one routine both the
`nixjail-expire-leases` timer and `nixjail serve` run.

A lease past its deadline (or, once asked, whose holder is gone) sends its
submission back to the queue with attempts+1; past the maximum attempts the
submission ends as `error` with the reason. A dependencies job that no cache
builder finished within `cache_builder.fallback_after_s` goes to the workers.

Retention, the other routine both `nixjail gc` and `nixjail serve` run:
`delete_old_submissions`.
"""

from __future__ import annotations

from collections.abc import Callable

from nixjail.errors import NotFound
from nixjail.kick import runner_kicker
from nixjail.settings import Settings
from nixjail.spool import Spool

# Whether the holder named in a lease still runs; None trusts deadlines alone.
HolderAlive = Callable[[str], bool]


def expire_pass(settings: Settings, *, holder_alive: HolderAlive | None = None,
                spool: Spool | None = None) -> list[str]:
    """One pass (on `spool`, else the settings' own); a line for each
    submission it requeued, ended or sent to the workers. Kicks this host's
    runner when a job went back to a queue."""
    spool = spool or Spool.from_settings(settings)
    lines = []
    queued_again = False
    if settings.cache_builder.enabled:
        for submission_id in spool.fall_back_to_workers(settings.cache_builder.fallback_after_s):
            queued_again = True
            lines.append(f"sent {submission_id} to the workers: no cache builder built its "
                         f"environment within {settings.cache_builder.fallback_after_s:g} s")
    for submission_id in spool.expire_leases(holder_alive=holder_alive):
        try:
            outcome = spool.get(submission_id)
        except NotFound:
            lines.append(f"dropped the lease on {submission_id} (its submission is gone)")
            continue
        if outcome.status.ended:
            lines.append(f"ended {outcome.id} as {outcome.status}: {outcome.error}")
        else:
            queued_again = True
            lines.append(f"requeued {outcome.id} ({outcome.status}, "
                         f"attempt {outcome.attempts} done)")
    if queued_again:
        # After a reboot nothing else would start the runner for these jobs.
        runner_kicker(settings.runner.kick_socket)()
    return lines


def delete_old_submissions(settings: Settings) -> list[str]:
    """Ended submissions past `gc.submission_max_age_s`, deleted; none on a host
    that keeps no spool."""
    age = settings.gc.submission_max_age_s
    if age is None or not (settings.spool_dir / "submissions").is_dir():
        return []
    return Spool.from_settings(settings).delete_ended(age)
