"""nixjail.nix against the real Nix: signed caches, chroot stores, roots, GC.

The worker's store in these tests is a chroot store (`local?root=DIR`), not
the daemon's store the paths were built in, so a path is valid there only if
it really came from the cache.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nixjail import nix
from nixjail.cli import gc as gc_cli
from nixjail.errors import ToolError

FIXTURE_NIXPKGS = Path(__file__).resolve().parent / "fixtures" / "nixpkgs"


pytestmark = [pytest.mark.nix]


@pytest.fixture(autouse=True)
def _nix_ready() -> None:
    # scripts/bootstrap provides these: fail, never skip, when one is missing.
    assert os.geteuid() == 0, "these tests need root"
    assert shutil.which("nix-build"), "nix is not installed (scripts/bootstrap)"
    assert (FIXTURE_NIXPKGS / "bin" / "busybox").exists(), "run scripts/bootstrap"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@dataclass
class SignedCache:
    directory: Path
    url: str  # http://127.0.0.1:PORT, loopback only
    public_key: str
    other_public_key: str
    paths: list[str]  # input-addressed: they need a signature


def build_text(text: str) -> str:
    """An input-addressed store path of the fixture nixpkgs (built as root)."""
    expr = f'(import <nixpkgs> {{}}).writeText "nixjail-test" "{text}"'
    proc = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True,
                          text=True, check=True,
                          env={**os.environ, "NIX_PATH": f"nixpkgs={FIXTURE_NIXPKGS}"})
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def signed_cache() -> Iterator[SignedCache]:
    base = Path(tempfile.mkdtemp(prefix="nixjail-nix-test-"))
    public = nix.generate_signing_key("nixjail-test-1", base / "secret", base / "public")
    other = nix.generate_signing_key("nixjail-other-1", base / "secret2", base / "public2")
    paths = [build_text(f"first {uuid.uuid4().hex}"), build_text(f"second {uuid.uuid4().hex}")]
    cache = base / "cache"
    nix.copy_to(f"file://{cache}?compression=none&secret-key={base / 'secret'}", paths)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(cache)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SignedCache(cache, f"http://127.0.0.1:{server.server_port}", public, other,
                          paths)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def chroot_store() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="nixjail-worker-store-"))
    yield f"local?root={root}"
    shutil.rmtree(root, ignore_errors=True)


def test_published_paths_are_signed_narinfos(signed_cache: SignedCache):
    for path in signed_cache.paths:
        narinfo = signed_cache.directory / f"{Path(path).name[:32]}.narinfo"
        text = narinfo.read_text()
        assert f"StorePath: {path}" in text
        assert "Sig: nixjail-test-1:" in text


def test_realise_with_the_right_key(signed_cache: SignedCache, chroot_store: str):
    nix.realise_from_cache(signed_cache.paths, store=chroot_store, caches=[signed_cache.url],
                           public_keys=[signed_cache.public_key], timeout_s=60)
    assert nix.valid_paths(chroot_store, signed_cache.paths) == set(signed_cache.paths)
    on_disk = nix.store_dir(chroot_store) / Path(signed_cache.paths[0]).name
    assert on_disk.read_text().startswith("first ")
    # Already there: nothing to fetch, even without any cache.
    nix.realise_from_cache(signed_cache.paths, store=chroot_store, caches=[],
                           public_keys=[], timeout_s=60)


def test_realise_with_a_wrong_key_fails_and_builds_nothing(signed_cache: SignedCache,
                                                           chroot_store: str):
    with pytest.raises(ToolError, match="is not signed by a trusted key of the cache builders"):
        nix.realise_from_cache(signed_cache.paths, store=chroot_store,
                               caches=[signed_cache.url],
                               public_keys=[signed_cache.other_public_key], timeout_s=60)
    assert nix.valid_paths(chroot_store, signed_cache.paths) == set()


def test_realise_of_a_path_no_cache_has_fails(signed_cache: SignedCache, chroot_store: str):
    absent = "/nix/store/" + "a" * 32 + "-nixjail-absent"
    with pytest.raises(ToolError, match="is not in any cache of the cache builders"):
        nix.realise_from_cache([absent], store=chroot_store, caches=[signed_cache.url],
                               public_keys=[signed_cache.public_key], timeout_s=60)


def test_realise_tries_the_next_cache(signed_cache: SignedCache, chroot_store: str):
    nix.realise_from_cache(signed_cache.paths[:1], store=chroot_store,
                           caches=["http://127.0.0.1:9", signed_cache.url],
                           public_keys=[signed_cache.public_key], timeout_s=60)
    assert nix.valid_paths(chroot_store, signed_cache.paths[:1]) == {signed_cache.paths[0]}


def test_realise_refuses_without_keys_or_with_bad_paths(chroot_store: str):
    with pytest.raises(ToolError, match="no public key"):
        nix.realise_from_cache(["/nix/store/" + "b" * 32 + "-x"], store=chroot_store,
                               caches=["http://127.0.0.1:9"], public_keys=[], timeout_s=5)
    with pytest.raises(ToolError, match="not a Nix store path"):
        nix.realise_from_cache(["/etc/passwd"], store=chroot_store, caches=[],
                               public_keys=[], timeout_s=5)


@pytest.mark.parametrize(("store", "expected"), [
    ("daemon", "/nix/store"), ("auto", "/nix/store"), ("local", "/nix/store"),
    ("local?root=/srv/worker", "/srv/worker/nix/store"), ("/srv/other", "/srv/other/nix/store"),
])
def test_store_dir(store: str, expected: str):
    assert nix.store_dir(store) == Path(expected)


def test_store_dir_refuses_remote_stores():
    with pytest.raises(ToolError):
        nix.store_dir("http://127.0.0.1:9")


def test_add_text_puts_a_file_in_the_store():
    text = f"export NIXJAIL_TEST={uuid.uuid4().hex}\n"
    path = nix.add_text("auto", "nixjail-env.sh", text)
    assert path.endswith("-nixjail-env.sh") and Path(path).read_text() == text


def test_roots_keep_paths_and_gc_drops_old_roots(signed_cache: SignedCache, chroot_store: str,
                                                tmp_path: Path):
    first, second = signed_cache.paths
    nix.realise_from_cache([first, second], store=chroot_store, caches=[signed_cache.url],
                           public_keys=[signed_cache.public_key], timeout_s=60)
    roots = tmp_path / "gcroots"
    old, young = roots / "environments" / "old", roots / "running" / "young"
    nix.add_gc_root(chroot_store, first, old)
    nix.add_gc_root(chroot_store, second, young)
    assert nix.root_target(old) == first
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(old, (week_ago, week_ago), follow_symlinks=False)

    report = nix.collect_garbage(chroot_store, roots_dir=roots, max_root_age_s=24 * 3600)
    assert report.removed_roots == [old] and report.kept_roots == 1
    assert report.deleted_paths >= 1
    assert nix.valid_paths(chroot_store, [first, second]) == {second}

    nix.remove_gc_root(young)
    nix.remove_gc_root(young)  # already gone: no error
    nix.collect_garbage(chroot_store, roots_dir=roots, max_root_age_s=None)
    assert nix.valid_paths(chroot_store, [second]) == set()


def test_gc_command(signed_cache: SignedCache, chroot_store: str, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]):
    first = signed_cache.paths[0]
    nix.realise_from_cache([first], store=chroot_store, caches=[signed_cache.url],
                           public_keys=[signed_cache.public_key], timeout_s=60)
    roots = tmp_path / "gcroots"
    nix.add_gc_root(chroot_store, first, roots / "kept")
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[gc]\nstore = "{chroot_store}"\nroots_dir = "{roots}"\n'
                        "root_max_age_s = 3600\n[cache_builder]\nreuse_built_s = 600\n")
    parser = argparse.ArgumentParser()
    gc_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["gc", "--settings", str(settings)])
    assert args.func(args) == 0
    assert "kept 1 roots" in capsys.readouterr().out
    assert nix.valid_paths(chroot_store, [first]) == {first}
    args = parser.parse_args(["gc", "--settings", str(settings), "--max-age", "0.001"])
    time.sleep(0.01)
    assert args.func(args) == 0
    assert "removed the root" in capsys.readouterr().out
    assert nix.valid_paths(chroot_store, [first]) == set()


def test_realise_into_the_daemons_store_checks_signatures_too(signed_cache: SignedCache):
    # A path of our own, in the cache but no longer in the daemon's store.
    path = build_text(f"daemon {uuid.uuid4().hex}")
    nix.copy_to(f"file://{signed_cache.directory}?compression=none"
                f"&secret-key={signed_cache.directory.parent / 'secret'}", [path])
    subprocess.run(["nix-store", "--delete", path], check=True, capture_output=True)
    assert nix.valid_paths("daemon", [path]) == set()
    try:
        with pytest.raises(ToolError, match="not signed by a trusted key"):
            nix.realise_from_cache([path], store="daemon", caches=[signed_cache.url],
                                   public_keys=[signed_cache.other_public_key], timeout_s=60)
        nix.realise_from_cache([path], store="daemon", caches=[signed_cache.url],
                               public_keys=[signed_cache.public_key], timeout_s=60)
        assert nix.valid_paths("daemon", [path]) == {path}
    finally:
        subprocess.run(["nix-store", "--delete", path], capture_output=True)
