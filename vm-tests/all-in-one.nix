# One host with everything: the API, the runner and the cache builder. A
# submission goes in through the API and comes out done, with the program's
# output; the runner is started by its socket; lease expiry runs on its timer.
#
# The same unit behaviour is tested without a VM in tests/systemd/; the
# module's evaluation in tests/nixos/, which also type-checks this script.
{ self }:
{ pkgs, lib, ... }:

let
  shellNix = "{ pkgs ? import <nixpkgs> { } }: pkgs.mkShellNoCC { packages = [ pkgs.hello ]; }";
  # The environment that shell.nix evaluates to: its inputs are put in the
  # VM's store, because the VM cannot download them.
  shell = pkgs.mkShellNoCC { packages = [ pkgs.hello ]; };
  submission = pkgs.writeText "submission.json" (
    builtins.toJSON {
      shell_nix = shellNix;
      run_sh = "hello; echo \"stdin: $(cat)\"";
      stdin = "from the VM test";
    }
  );
  image = self.packages.${pkgs.stdenv.hostPlatform.system}.nixjail-runner-image;
  submitDir = pkgs.runCommand "submission-dir" { } ''
    mkdir -p $out
    echo ${lib.escapeShellArg shellNix} >$out/shell.nix
    echo 'hello -g "hello from nixjail submit"' >$out/run.sh
  '';
  # Test secrets, in /etc of the VM; real hosts keep theirs out of the store.
  tokens = pkgs.writeText "api-tokens" ''
    submitter submit-token
    worker work-token
  '';
in
{
  name = "nixjail-all-in-one";

  nodes.machine =
    { ... }:
    {
      imports = [ self.nixosModules.default ];

      services.nixjail = {
        enable = true;
        cacheBuilder.enable = true;
        apiTokensFile = "/etc/nixjail-test/api-tokens";
      };
      environment.etc."nixjail-test/api-tokens".source = tokens;
      # No network in the VM: never wait for cache.nixos.org.
      nix.settings.substituters = lib.mkForce [ ];

      system.extraDependencies = [ shell.inputDerivation ];
      environment.systemPackages = [ pkgs.curl ];
      environment.variables.NIXJAIL_TOKEN = "submit-token";
      virtualisation = {
        memorySize = 3072;
        diskSize = 8192;
        cores = 2;
      };
    };

  testScript = ''
    import json
    from typing import Any

    API = "http://127.0.0.1:8460"
    SUBMIT = "-H 'Authorization: Bearer submit-token'"
    WORK = "-H 'Authorization: Bearer work-token'"

    def get(path: str) -> Any:
        return json.loads(machine.succeed(f"curl -sf {SUBMIT} '{API}{path}'"))

    def post(path: str, body: Any, auth: str = SUBMIT) -> Any:
        return json.loads(machine.succeed(
            f"curl -sf -X POST {auth} '{API}{path}' -H 'Content-Type: application/json' "
            f"-d '{json.dumps(body)}'"))

    def wait_until_ended(submission_id: str) -> Any:
        def ended(_last_try: bool) -> bool:
            status = get(f"/v1/submissions/{submission_id}?wait=30")["status"]
            return status not in ("queued", "building", "running")
        retry(ended, timeout=600)
        return get(f"/v1/submissions/{submission_id}")

    machine.wait_for_unit("sockets.target")
    machine.wait_for_unit("timers.target")
    machine.wait_for_unit("nixjail-runner-image.service")
    machine.succeed("docker image inspect ${image.imageName}:${image.imageTag}")

    with subtest("the first request starts the API through its socket"):
        machine.fail("systemctl is-active nixjail-api.service")
        machine.succeed(f"curl -sf {API}/healthz")
        machine.succeed("systemctl is-active nixjail-api.service")
        assert machine.succeed("systemctl show -P Type nixjail-api.service").strip() == "notify"
        assert machine.succeed("systemctl show -P WatchdogUSec nixjail-api.service").strip() == "20s"

    with subtest("the API refuses a submission without a token"):
        code = machine.succeed(
            f"curl -s -o /dev/null -w '%{{http_code}}' -X POST {API}/v1/submissions "
            "-H 'Content-Type: application/json' -d @${submission}")
        assert code == "401", code

    with subtest("a submission is built, run and done"):
        machine.fail("systemctl is-active nixjail-runner.service")
        created = json.loads(machine.succeed(
            f"curl -sf -X POST {SUBMIT} {API}/v1/submissions "
            "-H 'Content-Type: application/json' -d @${submission}"))
        done = wait_until_ended(created["id"])
        assert done["status"] == "done", done
        assert done["stages"]["dependencies"]["status"] == "ok", done
        run = done["stages"]["run"]
        assert run["status"] == "ok" and run["exit_code"] == 0, run
        assert run["stdout"] == "Hello, world!\nstdin: from the VM test\n", run

    with subtest("the runner was started by its socket"):
        triggered = machine.succeed("systemctl show -P TriggeredBy nixjail-runner.service")
        assert triggered.strip() == "nixjail-runner.socket", triggered
        machine.succeed(f"journalctl -u nixjail-runner.service | grep 'running {created['id']}'")

    with subtest("the spool keeps its owner while every unit runs"):
        machine.succeed("systemctl restart nixjail-cache-builder.service nixjail-api.service")
        owner = machine.succeed("stat -c '%U:%G %a' /var/lib/nixjail /run/nixjail").split("\n")
        assert owner[:2] == ["nixjail:nixjail 750", "nixjail:nixjail 711"], owner

    with subtest("nixjail submit, the users' client"):
        out = machine.succeed("nixjail submit ${submitDir}")
        assert out == "hello from nixjail submit\n", out

    with subtest("lease expiry runs on its timer"):
        timer = "nixjail-expire-leases.timer"
        machine.succeed(f"systemctl is-active {timer}")
        first = machine.succeed(f"systemctl show -P LastTriggerUSecMonotonic {timer}")
        machine.wait_until_succeeds(
            f"test \"$(systemctl show -P LastTriggerUSecMonotonic {timer})\" != '{first.strip()}'",
            timeout=60)
        result = machine.succeed("systemctl show -P Result nixjail-expire-leases.service")
        assert result.strip() == "success", result

    with subtest("a reboot drops the leases; expiry requeues their submissions"):
        # Hold a job as a worker would, with no cache builder to take it first.
        machine.succeed("systemctl stop nixjail-cache-builder.service")
        held = post("/v1/submissions", json.loads(machine.succeed("cat ${submission}")))
        lease = post("/v1/leases", {"queue": "dependencies", "holder": "vm-test/1"}, WORK)
        assert lease["lease"]["submission_id"] == held["id"], lease
        machine.shutdown()
        machine.start()
        machine.wait_for_unit("sockets.target")
        code = machine.succeed(
            f"curl -s -o /dev/null -w '%{{http_code}}' -X POST {WORK} "
            f"{API}/v1/leases/{held['id']}/renew -H 'Content-Type: application/json' "
            f"-d '{{\"token\": \"{lease['lease']['token']}\"}}'")
        assert code != "200", code
        # Requeued (attempts stays 1) or already leased again by the cache builder.
        machine.wait_until_succeeds(
            f"curl -sf {SUBMIT} {API}/v1/submissions/{held['id']} | grep -E "
            "'\"status\": ?\"queued\"|\"attempts\": ?[2-9]'", timeout=90)
        assert get(f"/v1/submissions/{created['id']}")["status"] == "done"
  '';
}
