"""The falcon app: routes, middleware, error handling.

`create_app` takes everything it works with, so tests and the server build it
the same way around a real spool.
"""

from __future__ import annotations

from collections.abc import Callable

import falcon
from prometheus_client import CollectorRegistry

from nixjail.api import errors
from nixjail.api.auth import AuthMiddleware, TokenFile
from nixjail.api.environments import EnvironmentCollection, EnvironmentItem
from nixjail.api.health import HealthResource, Parts
from nixjail.api.leases import LeaseCollection, LeaseItem
from nixjail.api.metrics import ApiMetrics, MetricsMiddleware, MetricsResource
from nixjail.api.openapi import OpenApiResource
from nixjail.api.submissions import SubmissionCollection, SubmissionItem, WaitSlots
from nixjail.kick import runner_kicker
from nixjail.settings import Settings
from nixjail.spool import Spool


def create_app(spool: Spool, settings: Settings, *,
               registry: CollectorRegistry | None = None,
               kick: Callable[[], None] | None = None,
               parts: Parts | None = None) -> falcon.App:
    """The API around `spool`; `kick` wakes the runner (default: its socket);
    `parts` tells `/healthz` how the parts of `nixjail serve` are."""
    metrics = ApiMetrics(spool, registry)
    tokens = TokenFile(settings.api.tokens_file) if settings.api.tokens_file else None
    kick = kick or runner_kicker(settings.runner.kick_socket)

    app = falcon.App(middleware=[MetricsMiddleware(metrics), AuthMiddleware(tokens)])
    errors.install(app)

    waits = WaitSlots(settings)
    submissions = SubmissionCollection(spool, settings, waits, kick=kick,
                                       created=metrics.submissions_created.inc)
    app.add_route("/v1/submissions", submissions)
    app.add_route("/v1/submissions/{submission_id}", SubmissionItem(spool, settings, waits))
    app.add_route("/v1/leases", LeaseCollection(spool, settings, waits))
    lease = LeaseItem(spool, settings, kick=kick)
    app.add_route("/v1/leases/{submission_id}/renew", lease, suffix="renew")
    app.add_route("/v1/leases/{submission_id}/stages/{stage}", lease, suffix="stage")
    app.add_route("/v1/leases/{submission_id}/cases/{index:int(min=0)}", lease, suffix="case")
    app.add_route("/v1/leases/{submission_id}/complete", lease, suffix="complete")
    app.add_route("/v1/leases/{submission_id}/release", lease, suffix="release")
    app.add_route("/v1/environments", EnvironmentCollection(spool, settings))
    app.add_route("/v1/environments/{name}", EnvironmentItem(spool, settings))
    app.add_route("/v1/openapi.json", OpenApiResource(settings))
    app.add_route("/healthz", HealthResource(spool, parts,
                                              min_free_bytes=settings.api.max_body_bytes))
    app.add_route("/metrics", MetricsResource(metrics))
    # Imported here: the front ends build on the API's modules.
    from nixjail.compat import mount as mount_compat

    mount_compat(app, spool, settings, kick=kick, waits=waits,
                 created=metrics.submissions_created.inc)
    return app
