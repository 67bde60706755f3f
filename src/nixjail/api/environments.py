"""`/v1/environments`: the operator's catalog, and which entries are built.

`GET /v1/environments` lists every catalog entry (submitter or admin token,
or none without a tokens file) with `built`: whether the cache builder
published an environment built from the entry's current shell.nix. An entry
edited since shows `built: false` until the cache builder builds it again.

`PUT /v1/environments/{name}` is how a cache builder on a host of its own
publishes what it built (worker token, as the lease endpoints); the local
cache builder writes to the spool directly.
"""

from __future__ import annotations

import falcon

from nixjail.api.errors import ApiError, invalid
from nixjail.api.media import parse_body, respond
from nixjail.api.schemas import EnvironmentPublication, FieldError
from nixjail.models import CATALOG_NAME, CatalogEntry, EnvironmentList
from nixjail.settings import CatalogEnvironment, Settings
from nixjail.spool import PublishedEnvironment, Spool, shell_nix_sha256


def catalog_entry(entry: CatalogEnvironment,
                  published: PublishedEnvironment | None) -> CatalogEntry:
    """How `entry` is listed, given what was published under its name."""
    shell_nix = entry.shell_nix_text()
    built = published is not None and published.shell_nix_sha256 == shell_nix_sha256(shell_nix)
    return CatalogEntry(
        name=entry.name, version=entry.version, description=entry.description,
        aliases=list(entry.aliases), main_file=entry.main_file, compile_sh=entry.compile_sh,
        run_sh=entry.run_sh, shell_nix=shell_nix, built=built,
        built_at=published.built_at if built and published is not None else None)


class EnvironmentCollection:
    role = "submitter"

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.spool = spool
        self.settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        published = self.spool.published_environments()
        respond(resp, EnvironmentList(environments=[
            catalog_entry(entry, published.get(entry.name))
            for entry in self.settings.environments]))


class EnvironmentItem:
    role = "worker"

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.spool = spool
        self.settings = settings

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if not CATALOG_NAME.fullmatch(name):
            raise invalid("name", "is no catalog environment name (lower-case letters, "
                          "digits and . _ + -, at most 100)", title="invalid parameter")
        # By its own name only: an alias is another name of the same entry.
        if not any(entry.name == name for entry in self.settings.environments):
            raise ApiError(404, "not found", f"no catalog environment named {name!r}",
                           [FieldError(field="name", reason="not in this server's catalog")])
        body = parse_body(req, EnvironmentPublication, self.settings.api.max_body_bytes)
        self.spool.publish_environment(name, body.environment,
                                       shell_nix_sha256=body.shell_nix_sha256)
        resp.status = falcon.HTTP_204
