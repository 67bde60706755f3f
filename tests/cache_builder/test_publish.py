"""Publishing: every built environment goes to a signed binary cache, from
which a worker's store takes it (substitute-only, signature-checked)."""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cb_helpers import request, shell
from test_builds import one_job

from nixjail import nix
from nixjail.cache_builder.service import CacheBuilder
from nixjail.client import SpoolLeaseSource
from nixjail.errors import ToolError
from nixjail.models import StageStatus
from nixjail.settings import Settings
from nixjail.spool import Spool


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(base: Path) -> Iterator[tuple[Path, str]]:
    """A cache directory and its loopback HTTP URL."""
    cache = base / "cache"
    cache.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(cache)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield cache, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_built_environments_are_published_signed(settings: Settings, spool: Spool,
                                                  base: Path, served):
    cache, url = served
    public = nix.generate_signing_key("nixjail-builder-1", base / "secret", base / "public")
    other = nix.generate_signing_key("nixjail-stranger-1", base / "secret2", base / "public2")
    settings.cache_builder.publish_to = (
        f"file://{cache}?compression=none&secret-key={base / 'secret'}")
    builder = CacheBuilder(settings, SpoolLeaseSource(spool, settings), spool=spool,
                           name="cb@publish")
    sub = spool.create(request(shell()))
    one_job(builder)
    done = spool.get(sub.id)
    assert done.stages.dependencies.status is StageStatus.ok, done.stages.dependencies
    env = done.environment
    for path in (env.inputs, env.script):
        narinfo = (cache / f"{Path(path).name[:32]}.narinfo").read_text()
        assert f"StorePath: {path}" in narinfo and "Sig: nixjail-builder-1:" in narinfo

    worker = Path(tempfile.mkdtemp(prefix="nixjail-worker-store-"))
    try:
        store = f"local?root={worker}"
        with pytest.raises(ToolError, match="not signed by a trusted key"):
            nix.realise_from_cache([env.inputs, env.script], store=store, caches=[url],
                                   public_keys=[other], timeout_s=60)
        nix.realise_from_cache([env.inputs, env.script], store=store, caches=[url],
                               public_keys=[public], timeout_s=60)
        assert nix.valid_paths(store, [env.inputs, env.script]) == {env.inputs, env.script}
        script = nix.store_dir(store) / Path(env.script).name
        assert script.read_text() == Path(env.script).read_text()
    finally:
        shutil.rmtree(worker, ignore_errors=True)
