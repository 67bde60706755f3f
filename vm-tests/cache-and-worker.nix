# Two hosts: `builder` has the API, the cache builder and nix-serve; `worker`
# has only the runner, which leases from the builder's API with a worker
# token and substitutes the environment from its nix-serve, signed.
#
# The same unit behaviour is tested without a VM in tests/systemd/; the
# module's evaluation in tests/nixos/, which also type-checks this script.
{ self }:
{ pkgs, lib, ... }:

let
  shellNix = "{ pkgs ? import <nixpkgs> { } }: pkgs.mkShellNoCC { packages = [ pkgs.hello ]; }";
  shell = pkgs.mkShellNoCC { packages = [ pkgs.hello ]; };
  submission = pkgs.writeText "submission.json" (
    builtins.toJSON {
      shell_nix = shellNix;
      run_sh = "hello -g 'hello from the worker'";
    }
  );
  # Test secrets; real hosts keep theirs out of the store.
  tokens = pkgs.writeText "api-tokens" ''
    submitter submit-token
    worker work-token
  '';
  workerToken = pkgs.writeText "worker-token" "work-token";
  # Secrets are named by strings outside the store: the test's copies are in /etc.
  secrets = "/etc/nixjail-test";
in
{
  name = "nixjail-cache-and-worker";

  nodes = {
    builder =
      { ... }:
      {
        imports = [ self.nixosModules.default ];
        services.nixjail = {
          enable = true;
          api = {
            listenAddress = "0.0.0.0";
            openFirewall = true;
          };
          apiTokensFile = "${secrets}/api-tokens";
          runner.enable = false;
          cacheBuilder.enable = true;
        };
        services.nix-serve = {
          enable = true;
          secretKeyFile = "${secrets}/cache-key.sec";
          openFirewall = true;
        };
        environment.etc."nixjail-test/api-tokens".source = tokens;
        environment.etc."nixjail-test/cache-key.sec".source = ./keys/cache-key.sec;
        # The builder has what the environment needs; the worker does not.
        system.extraDependencies = [ shell.inputDerivation ];
        nix.settings.substituters = lib.mkForce [ ];
        environment.systemPackages = [ pkgs.curl ];
        virtualisation = {
          memorySize = 2048;
          diskSize = 8192;
        };
      };

    worker =
      { ... }:
      {
        imports = [ self.nixosModules.default ];
        services.nixjail = {
          enable = true;
          api.enable = false;
          runner = {
            apiUrl = "http://builder:8460";
            apiTokenFile = "${secrets}/worker-token";
          };
          caches = [ "http://builder:5000" ];
          cachePublicKeys = [ (lib.fileContents ./keys/cache-key.pub) ];
        };
        environment.etc."nixjail-test/worker-token".source = workerToken;
        # No network in the VMs; the runner copies from the caches itself.
        nix.settings.substituters = lib.mkForce [ ];
        virtualisation = {
          memorySize = 2048;
          diskSize = 8192;
        };
      };
  };

  testScript = ''
    import json
    from typing import Any

    API = "http://builder:8460"
    SUBMIT = "-H 'Authorization: Bearer submit-token'"

    builder.wait_for_unit("nixjail-api.socket")
    builder.wait_for_unit("nix-serve.service")
    builder.wait_for_unit("nixjail-cache-builder.service")
    worker.wait_for_unit("nixjail-runner.service")
    worker.wait_for_unit("network-online.target")
    builder.wait_for_open_port(5000)

    with subtest("the worker does not have the environment yet"):
        worker.fail("nix-store --check-validity ${pkgs.hello}")
        worker.succeed("curl -sf http://builder:5000/nix-cache-info")

    with subtest("the API refuses a submission without a token"):
        code = worker.succeed(
            f"curl -s -o /dev/null -w '%{{http_code}}' -X POST {API}/v1/submissions "
            "-H 'Content-Type: application/json' -d @${submission}")
        assert code == "401", code

    with subtest("built on the builder, run on the worker"):
        created = json.loads(builder.succeed(
            f"curl -sf -X POST {API}/v1/submissions {SUBMIT} "
            "-H 'Content-Type: application/json' -d @${submission}"))

        def ended(_last_try: bool) -> bool:
            answer: Any = json.loads(builder.succeed(
                f"curl -sf {SUBMIT} '{API}/v1/submissions/{created['id']}?wait=30'"))
            return answer["status"] not in ("queued", "building", "running")

        retry(ended, timeout=600)
        done = json.loads(builder.succeed(
            f"curl -sf {SUBMIT} {API}/v1/submissions/{created['id']}"))
        assert done["status"] == "done", done
        assert done["stages"]["dependencies"]["status"] == "ok", done
        assert done["stages"]["run"]["stdout"] == "hello from the worker\n", done
        worker.succeed(f"journalctl -u nixjail-runner.service | grep 'running {created['id']}'")
        builder.succeed(f"journalctl -u nixjail-cache-builder.service | grep {created['id']}")

    with subtest("the environment came signed from the builder's nix-serve"):
        worker.succeed("nix-store --check-validity ${pkgs.hello}")
        signatures = worker.succeed(
            "nix --extra-experimental-features nix-command path-info --sigs ${pkgs.hello}")
        assert "nixjail-vm-test-1:" in signatures, signatures
  '';
}
