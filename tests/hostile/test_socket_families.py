"""Sockets of families the jail refuses, and the API's port over loopback.

Each submission runs a probe that opens one socket of each kind with a real
socket(2) call and prints what the kernel answered, by errno name. It runs in
the run stage and in the compile stage (the static `probes/abi-probe`, sent as
a file: the jail has no interpreter the environment did not bring), and in a
derivation builder of its `shell.nix` (python3, given to the builds as the
image's own tools or an operator's sandbox path), with `cache: true` and
`cache: false`.

AF_VSOCK is the family that matters most: it is not confined by the network
namespace, so on a VM host it reaches the hypervisor's transport (CID 2, the
host; CID 1, the local loopback). The probe never connects one, even if the
socket were created: a created socket already fails the test.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import our_containers
from serve_stack import SHELL_NIX, Served, serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

PYTHON = "/usr/bin/python3"
ABI_PROBE = {"content": base64.b64encode(
    (Path(__file__).parent / "probes" / "abi-probe").read_bytes()).decode(),
    "encoding": "base64"}

# argv[1]: the API's port. One line per attack: "<attack>: <call>: <outcome>".
PROBE = r"""
import errno, socket, sys

port = int(sys.argv[1])


def attempt(attack, family, kind, proto=0, address=None):
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        print(attack + ": socket: " + errno.errorcode[error.errno])
        return
    with sock:
        if address is None:
            print(attack + ": socket: created")
            return
        try:
            sock.connect(address)
        except OSError as error:
            print(attack + ": connect: " + errno.errorcode[error.errno])
            return
        print(attack + ": connect: connected")


# AF_VSOCK toward CID 1 and CID 2: refused at socket(), never connected.
attempt("vsock cid 1", socket.AF_VSOCK, socket.SOCK_STREAM)
attempt("vsock cid 2", socket.AF_VSOCK, socket.SOCK_STREAM)
attempt("packet", socket.AF_PACKET, socket.SOCK_RAW, 0x0300)  # ETH_P_ALL
attempt("netlink", socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
attempt("alg", socket.AF_ALG, socket.SOCK_SEQPACKET)
attempt("bluetooth", 31, socket.SOCK_STREAM)  # AF_BLUETOOTH
attempt("raw inet", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
attempt("raw inet6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
attempt("api port", socket.AF_INET, socket.SOCK_STREAM, 0, ("127.0.0.1", port))
"""

# Every attack refused; the TCP connect reaches only the jail's own loopback.
REFUSED = {
    "vsock cid 1": "socket: EAFNOSUPPORT",
    "vsock cid 2": "socket: EAFNOSUPPORT",
    "packet": "socket: EAFNOSUPPORT",
    "netlink": "socket: EAFNOSUPPORT",
    "alg": "socket: EAFNOSUPPORT",
    "bluetooth": "socket: EAFNOSUPPORT",
    "raw inet": "socket: EPERM",
    "raw inet6": "socket: EPERM",
    "api port": "connect: ECONNREFUSED",
}

# The Nix sandbox shows a builder only its inputs: the probe's python3 and its
# libraries are given to this stack's builds, as an operator could give a path.
SETTINGS = ('[cache_builder]\nenabled = true\n'
            'sandbox_paths = ["/usr", "/lib", "/lib64"]\n')


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serving(tmp_path_factory.mktemp("socket-families"), settings_toml=SETTINGS)


def _port(served: Served) -> int:
    return int(served.api.url.rsplit(":", 1)[1])


def _outcomes(text: str) -> dict[str, str]:
    """What the probe printed per attack (a build log may prefix its lines)."""
    found = {}
    for line in text.splitlines():
        for attack in REFUSED:
            mark = f"{attack}: "
            if line.startswith(mark) or f"> {mark}" in line:
                found[attack] = line.split(mark, 1)[1]
    return found


def _left_clean_and_serving(served: Served, cache: bool) -> None:
    """No container of the runner is left, and a benign submission runs."""
    served.wait_until("the runner's containers gone",
                      lambda: not our_containers(served.runner_name))
    benign = served.api.submit(run_sh="echo benign", cache=cache)
    assert benign["status"] == "done", benign
    assert stage_stdout(benign) == "benign\n"
    served.wait_until("the benign submission's container gone",
                      lambda: not our_containers(served.runner_name))


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("stage", ["run", "compile"])
def test_socket_families_in_a_stage(served: Served, stage: str, cache: bool) -> None:
    command = f"./abi-probe sockets {_port(served)}"
    fields = {"run_sh": command} if stage == "run" else {"compile_sh": command,
                                                        "run_sh": "echo ran"}
    ended = served.api.submit(shell_nix=SHELL_NIX, files={"abi-probe": ABI_PROBE},
                              cache=cache, **fields)
    result = ended["stages"][stage]
    assert ended["status"] == "done", ended
    assert result["status"] == "ok", result
    assert _outcomes(result["stdout"]) == REFUSED, result
    assert result["stderr"] == ""
    if stage == "compile":
        assert stage_stdout(ended) == "ran\n"
    _left_clean_and_serving(served, cache)


def _probing_shell_nix(port: int) -> str:
    """A shell.nix whose one package's builder runs the probe, then fails."""
    probe = PROBE.replace("''", "'''").replace("${", "''${")
    return f"""{{ pkgs ? import <nixpkgs> {{}} }}:
let probe = builtins.toFile "probe.py" ''{probe}'';
    attack = derivation {{
      name = "socket-families";
      system = builtins.currentSystem;
      builder = "${{pkgs.bash}}/bin/bash";
      nonce = "{uuid.uuid4().hex}";
      args = [ "-c" "{PYTHON} ${{probe}} {port}; exit 1" ];
    }};
in pkgs.mkShell {{ packages = [ attack ]; }}
"""


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
def test_socket_families_in_a_shell_nix_build(served: Served, cache: bool) -> None:
    ended = served.api.submit(shell_nix=_probing_shell_nix(_port(served)), run_sh="true",
                              cache=cache)
    deps = ended["stages"]["dependencies"]
    assert ended["status"] == "failed", ended
    assert deps["status"] == "nonzero_exit", deps
    assert _outcomes(deps["stderr"]) == REFUSED, deps["stderr"][-3000:]
    assert ended["stages"]["run"]["status"] == "skipped"
    _left_clean_and_serving(served, cache)
