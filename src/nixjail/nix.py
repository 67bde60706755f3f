"""A thin wrapper around the Nix command line.

Every call runs a Nix binary with an argument list (never a shell string) and
turns a failure into a `ToolError` whose message says what nixjail tried and
what Nix answered. Store arguments are Nix store URIs: `daemon`, `auto`,
`local`, `local?root=/x`, and for copies any binary-cache URL
(`file:///dir?secret-key=…`, `http://…`, `s3://…`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nixjail.errors import ToolError

NIX_COMMAND = ("--extra-experimental-features", "nix-command")
STORE_DIR = Path("/nix/store")
STORE_PATH_RE = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$")
# Keep what Nix said short in error messages: the end is what explains it.
MESSAGE_TAIL_CHARS = 2000
DEFAULT_TIMEOUT_S = 600.0


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_TAIL_CHARS else "…" + text[-MESSAGE_TAIL_CHARS:]


def run(argv: Sequence[str], *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one Nix command; ToolError naming `what` when it fails or times out."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text,
                              timeout=timeout_s, stdin=None if input_text is not None
                              else subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: {argv[0]} did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise ToolError(f"{what} failed (exit {proc.returncode}): {_tail(proc.stderr)}")
    return proc


def _store_args(store: str) -> list[str]:
    return ["--store", store]


# -- stores -------------------------------------------------------------------


def store_dir(store: str) -> Path:
    """The host directory that holds the `/nix/store` of `store`.

    `daemon`, `auto`, `local` (and `unix://…`) use the host's own store;
    `local?root=/x` (or `/x` itself) keeps it under `/x/nix/store`.
    """
    parsed = urllib.parse.urlsplit(store)
    if store.startswith("/"):
        return Path(store) / STORE_DIR.relative_to("/")
    if parsed.scheme in ("", "local") or store in ("daemon", "auto", "local"):
        params = urllib.parse.parse_qs(parsed.query)
        root = params.get("root", [None])[0]
        if root:
            return Path(root) / STORE_DIR.relative_to("/")
        store_param = params.get("store", [None])[0]
        return Path(store_param) if store_param else STORE_DIR
    if parsed.scheme == "unix":
        return STORE_DIR
    raise ToolError(f"the store {store!r} is not on this host")


def check_store_paths(paths: Iterable[str]) -> list[str]:
    """`paths` as a list, refusing anything that is not a plain store path."""
    checked = list(paths)
    for path in checked:
        if not STORE_PATH_RE.match(path):
            raise ToolError(f"{path!r} is not a Nix store path")
    return checked


def _valid_infos(store: str, paths: Iterable[str]) -> list[dict]:
    """`nix path-info --json` of those of `paths` that are valid in `store`."""
    wanted = check_store_paths(paths)
    if not wanted:
        return []
    # `nix path-info` prints the valid ones and complains about the others,
    # which is what we want to know, so its exit status is not an error here.
    try:
        proc = subprocess.run(["nix", *NIX_COMMAND, "path-info", *_store_args(store), "--json",
                               *wanted], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=DEFAULT_TIMEOUT_S)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"checking paths in {store}: {exc}") from None
    try:
        infos = json.loads(proc.stdout or "[]")
    except ValueError:
        raise ToolError(f"checking paths in {store}: {_tail(proc.stderr)}") from None
    # Nix 2.8 lists invalid paths too, with "valid": false.
    return [info for info in infos if info.get("valid", True) and "path" in info]


def valid_paths(store: str, paths: Iterable[str]) -> set[str]:
    """The subset of `paths` that is valid in `store`."""
    return {info["path"] for info in _valid_infos(store, paths)}


def registration_times(store: str, paths: Iterable[str]) -> dict[str, int]:
    """Those of `paths` that are valid, each with the time it became valid (epoch s)."""
    return {info["path"]: int(info.get("registrationTime") or 0)
            for info in _valid_infos(store, paths)}


def closure_registration_times(store: str, paths: Iterable[str]) -> dict[str, int]:
    """Each path of the closure of `paths` with the time it became valid (epoch s)."""
    wanted = check_store_paths(paths)
    proc = run(["nix", *NIX_COMMAND, "path-info", *_store_args(store), "--json",
                "--recursive", *wanted], what="reading the closure")
    return {info["path"]: int(info.get("registrationTime") or 0)
            for info in json.loads(proc.stdout)}


def add_text(store: str, name: str, text: str) -> str:
    """Add `text` to `store` as a file called `name`; its store path."""
    with tempfile.TemporaryDirectory(prefix="nixjail-add-") as tmp:
        file = Path(tmp) / name
        file.write_text(text)
        proc = run(["nix-store", *_store_args(store), "--add", str(file)],
                   what=f"adding {name} to the store")
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return check_store_paths([path])[0]


def hash_path(path: Path) -> str:
    """The NAR hash of a file or directory tree (what Nix would store it as)."""
    return run(["nix-hash", "--type", "sha256", "--base32", str(path)],
               what=f"hashing {path}").stdout.strip()


def generate_signing_key(name: str, secret_file: Path, public_file: Path) -> str:
    """Make a binary-cache signing key pair; the public key (`name:base64`)."""
    run(["nix-store", "--generate-binary-cache-key", name, str(secret_file),
         str(public_file)], what="generating a signing key")
    return public_file.read_text().strip()


# -- binary caches --------------------------------------------------------------


def copy_to(cache_url: str, paths: Sequence[str], *, store: str = "auto",
            timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Copy `paths` and their closures from `store` to the binary cache `cache_url`.

    A `file://…?secret-key=FILE` (or `s3://…?secret-key=`) URL makes Nix sign
    each path it writes; paths already in the cache are skipped.
    """
    paths = check_store_paths(paths)
    run(["nix", *NIX_COMMAND, "copy", "--from", store, "--to", cache_url, *paths],
        what=f"publishing to {_without_secrets(cache_url)}", timeout_s=timeout_s)


def _without_secrets(url: str) -> str:
    """The URL with its query dropped: it may name the secret key's file."""
    parsed = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parsed._replace(query=""))


def realise_from_cache(paths: list[str], *, store: str, caches: list[str],
                       public_keys: list[str], timeout_s: float) -> None:
    """Make `paths` and their closures valid in `store`, from `caches` only.

    Nothing is ever built: `nix copy --from CACHE` only copies, and the
    destination store accepts a path only when it carries a signature of one
    of `public_keys` (`require-sigs`). Each cache is tried in turn until one
    has them all; a ToolError names the problem otherwise.
    """
    paths = check_store_paths(paths)
    if not paths:
        return
    missing = sorted(set(paths) - valid_paths(store, paths))
    if not missing:
        return
    if not caches:
        raise ToolError(f"the environment {missing[0]} is not in the store and no cache "
                        "of the cache builders is configured")
    if not public_keys:
        raise ToolError("no public key of the cache builders is configured: "
                        "nixjail accepts only signed environments")
    deadline = time.monotonic() + timeout_s
    problems = []
    for cache in caches:
        argv = ["nix", *NIX_COMMAND, "copy", "--from", cache, "--to", store,
                "--option", "require-sigs", "true",
                "--option", "trusted-public-keys", " ".join(public_keys),
                # No substituter of the host's own config may take part.
                "--option", "substituters", "", "--option", "max-jobs", "0",
                # A "not there" remembered from before it was published is no answer.
                "--option", "narinfo-cache-negative-ttl", "0", *missing]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problems.append(f"{cache}: no time left")
            break
        try:
            run(argv, what=f"fetching from {_without_secrets(cache)}", timeout_s=remaining)
            return
        except ToolError as exc:
            problems.append(str(exc))
    text = "\n".join(problems)
    unsigned = re.search(r"cannot add path '([^']+)' because it lacks a valid signature", text)
    if unsigned:
        raise ToolError(f"the environment {unsigned.group(1)} is not signed by a trusted key "
                        f"of the cache builders ({' '.join(public_keys)})")
    absent = re.search(r"path '([^']+)' is required, but there is no substituter", text)
    if absent or "does not exist in binary cache" in text:
        name = absent.group(1) if absent else missing[0]
        raise ToolError(f"the environment {name} is not in any cache of the cache builders "
                        f"({', '.join(_without_secrets(c) for c in caches)})")
    raise ToolError(f"cannot fetch the environment {missing[0]} from the cache builders: "
                    f"{_tail(text)}")


# -- what interrupted builds leave in the store -----------------------------------

# One output of a derivation file's first list: `("out","/nix/store/…","","")`.
_DRV_OUTPUT_RE = re.compile(r'\("[^"]*","([^"]*)","[^"]*","[^"]*"\)')


def derivation_outputs(text: str) -> list[str]:
    """The output paths a derivation file (ATerm) names, in its outputs list only:
    `Derive([OUTPUTS],[inputs],…)`; never a path of its inputs or environment."""
    if not text.startswith("Derive(["):
        return []
    outputs = text[len("Derive(["):text.find("],[")]
    return [path for path in _DRV_OUTPUT_RE.findall(outputs) if STORE_PATH_RE.match(path)]


def remove_abandoned_build_chroots(store: Path = STORE_DIR) -> list[Path]:
    """Remove the sandbox directories (`X.drv.chroot`) that no build uses.

    Nix makes each sandboxed build's root, its /tmp and its outputs included,
    in the store beside the derivation, and removes it when the build ends;
    a builder killed with its daemon leaves it behind. A build holds the
    lock (flock) on each of its outputs' `.lock` files for as long as its
    chroot exists; holding them all here, the chroot is nobody's, and no build
    of that derivation can start before it is gone.
    """
    removed = []
    try:
        names = [entry.name for entry in os.scandir(store) if entry.name.endswith(".drv.chroot")]
    except FileNotFoundError:
        return removed
    for name in names:
        chroot = store / name
        drv = store / name.removesuffix(".chroot")
        try:
            outputs = derivation_outputs(drv.read_text(errors="replace"))
        except OSError:
            outputs = []  # collected since: no build can be using it
        with contextlib.ExitStack() as locks:
            if all(_try_lock(locks, Path(f"{output}.lock")) for output in outputs):
                shutil.rmtree(chroot, ignore_errors=True)
                removed.append(chroot)
    return removed


# What a build log names as built: `building '/nix/store/…-name.drv'...`.
_BUILDING_RE = re.compile(r"building '(/nix/store/[0-9a-z]{32}-[^'/]+\.drv)'")


def built_derivations(log_text: str) -> list[str]:
    """The derivations a Nix build log says it built (at most a thousand)."""
    return list(dict.fromkeys(_BUILDING_RE.findall(log_text)))[:1000]


def remove_failed_outputs(store: str, drvs: Iterable[str], since: int) -> list[Path]:
    """Remove what the builds of `drvs` of a failed job left in the store.

    Nix leaves what a failed build wrote at its output paths, unregistered,
    until a garbage collection. An output that is not valid is nobody's: with
    the locks of all the derivation's outputs held, no build of it is under
    way. An output registered since `since` (epoch s) was built by the job
    (or just now by another, which holds it with a temporary root): it is
    deleted through Nix, which keeps whatever is still alive. `drvs` may come
    from a log a submission wrote into, so it can name only such paths.
    """
    directory = store_dir(store)
    removed = []
    for drv in drvs:
        drv_file = directory / Path(drv).name
        try:
            outputs = derivation_outputs(drv_file.read_text(errors="replace"))
        except OSError:
            continue
        present = [out for out in outputs if os.path.lexists(directory / Path(out).name)]
        if not present:
            continue
        with contextlib.ExitStack() as locks:
            if not all(_try_lock(locks, directory / f"{Path(out).name}.lock")
                       for out in outputs):
                continue
            registered = registration_times(store, present)
            new = [out for out, when in registered.items() if when >= since]
            if new:
                # It refuses (and says so) what is still alive: that stays.
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(["nix-store", *_store_args(store), "--delete", *new],
                                   capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
                removed += [directory / Path(out).name for out in new
                            if not os.path.lexists(directory / Path(out).name)]
            for out in present:
                if out in registered:
                    continue
                target = directory / Path(out).name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
                removed.append(target)
    return removed


def _try_lock(stack: contextlib.ExitStack, lock_file: Path) -> bool:
    """Hold `lock_file` as Nix locks it, if no one does.

    A missing one is made (empty, as Nix makes it), so a build that starts
    meanwhile waits for it rather than making the chroot being removed.
    """
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    stack.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# -- garbage collector roots ------------------------------------------------------


def add_gc_root(store: str, path: str, root: Path) -> None:
    """Make `root` (a symlink nixjail owns) an indirect GC root of `path` in `store`.

    Re-adding an existing root replaces it, which also renews its age for
    `collect_garbage`.
    """
    check_store_paths([path])
    root.parent.mkdir(parents=True, exist_ok=True)
    # `--realise` of a valid output path builds nothing; with `--add-root` it
    # makes the symlink and registers it with the store (gcroots/auto).
    run(["nix-store", *_store_args(store), "--realise", path, "--add-root", str(root),
         "--indirect"], what=f"adding the GC root {root}")


def remove_gc_root(root: Path) -> None:
    """Drop a root made by `add_gc_root`; the store forgets it at its next GC."""
    with contextlib.suppress(FileNotFoundError):
        root.unlink()


def root_target(root: Path) -> str | None:
    """The store path a root points at, if it is one of ours."""
    try:
        target = os.readlink(root)
    except OSError:
        return None
    return target if STORE_PATH_RE.match(target) else None


# The cache builder's roots of catalog environments, under its roots_dir: the
# catalog is always offered, so `nixjail gc` never ages these out.
CATALOG_ROOTS = "catalog"


@dataclass
class GcReport:
    removed_roots: list[Path] = field(default_factory=list)
    kept_roots: int = 0
    deleted_paths: int = 0
    freed_bytes: int = 0


_FREED_RE = re.compile(r"(\d+) store paths deleted, ([\d.]+) MiB freed")


def collect_garbage(store: str, *, roots_dir: Path, max_root_age_s: float | None,
                    max_freed_bytes: int | None = None, now: float | None = None,
                    timeout_s: float = 3600, keep_dirs: tuple[Path, ...] = ()) -> GcReport:
    """Drop nixjail's roots older than `max_root_age_s`, then collect `store`'s garbage.

    Every symlink under `roots_dir` (recursively) is a root; its age is the
    time since it was last (re-)added, so a root that is used again stays
    young. Roots younger than the bound stay, and with them everything they
    reach; so do the roots of everything else on the host. `max_root_age_s`
    None removes no root; `max_freed_bytes` stops the collection early.
    Roots under `keep_dirs` (the catalog's) are never aged out.
    """
    now = time.time() if now is None else now
    report = GcReport()
    if roots_dir.is_dir():
        for root in sorted(roots_dir.rglob("*")):
            if not root.is_symlink():
                continue
            try:
                age = now - root.lstat().st_mtime
            except FileNotFoundError:
                continue
            kept = any(root.is_relative_to(directory) for directory in keep_dirs)
            if max_root_age_s is not None and age > max_root_age_s and not kept:
                remove_gc_root(root)
                report.removed_roots.append(root)
            else:
                report.kept_roots += 1
    argv = ["nix-store", *_store_args(store), "--gc"]
    if max_freed_bytes is not None:
        argv += ["--max-freed", str(max_freed_bytes)]
    proc = run(argv, what=f"collecting garbage in {store}", timeout_s=timeout_s)
    match = _FREED_RE.search(proc.stdout + proc.stderr)
    if match:
        report.deleted_paths = int(match.group(1))
        report.freed_bytes = int(float(match.group(2)) * 1024 * 1024)
    return report
