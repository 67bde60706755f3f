# nixjail on NixOS.
#
# The units themselves come from the package (lib/systemd/system, rendered
# from nixos/units/*.in: one definition for NixOS and every other host, and the
# one tests/systemd boots). This module enables the ones a host needs and adds
# what is specific to it in drop-ins: secrets as credentials, PATH, the API's
# address. Every unit and the CLI read the settings from
# /etc/nixjail/settings.toml, rendered from `services.nixjail.settings`.
#
# tests/nixos evaluates this module with nixpkgs' lib for every layout of
# docs/operations.md (nixos/examples/).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.nixjail;
  settingsFormat = pkgs.formats.toml { };
  settingsFile = settingsFormat.generate "nixjail-settings.toml" cfg.settings;

  # The directories of the units (StateDirectory=, RuntimeDirectory=, tmpfiles).
  spoolDir = "/var/lib/nixjail";
  runDir = "/run/nixjail";
  kickSocket = "${runDir}/runner.sock";

  imageRef = "${cfg.runner.image.imageName}:${cfg.runner.image.imageTag}";

  # systemd puts credentials in /run/credentials/UNIT/NAME; the settings name that path.
  credential = unit: name: "/run/credentials/${unit}.service/${name}";

  # An IPv6 address needs brackets before the port (systemd and waitress).
  listen =
    if lib.hasInfix ":" cfg.api.listenAddress then
      "[${cfg.api.listenAddress}]:${toString cfg.api.port}"
    else
      "${cfg.api.listenAddress}:${toString cfg.api.port}";

  remoteWorker = cfg.runner.enable && cfg.runner.apiUrl != null;
  remoteCacheBuilder = cfg.cacheBuilder.enable && cfg.cacheBuilder.apiUrl != null;

  # A secret file: a string naming it, never a Nix path (which would be copied
  # into the world-readable store).
  secretFile =
    description:
    lib.mkOption {
      type = lib.types.nullOr lib.types.externalPath;
      default = null;
      example = "/run/secrets/nixjail-worker-token";
      inherit description;
    };

  section =
    description: options:
    lib.mkOption {
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        inherit options;
      };
      default = { };
      inherit description;
    };

  # Settings the units' own definitions fix: they cannot be changed here.
  fixed =
    value: description:
    lib.mkOption {
      type = lib.types.str;
      default = value;
      readOnly = true;
      inherit description;
    };
in
{
  meta.maintainers = [ ];

  options.services.nixjail = {
    enable = lib.mkEnableOption "nixjail, a service that runs untrusted submissions bringing their own Nix toolchain";

    package = lib.mkPackageOption pkgs "nixjail" { };

    settings = lib.mkOption {
      description = ''
        nixjail's settings, written as TOML to /etc/nixjail/settings.toml, which
        every unit and the `nixjail` command read. Every key of
        `src/nixjail/settings.py` may be set (its field descriptions are the
        reference); the module fills in the paths of its units, secrets and
        image. TOML has no null: leave a key out for its default, and write
        `"never"` for an `idle_exit_s` that never ends.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          spool_dir = fixed spoolDir "The spool: the StateDirectory= of the units.";
          run_dir = fixed runDir "Leases and locks: the RuntimeDirectory= of the units.";
          api = section "The API (`nixjail api`): request limits, threads, tokens." {
            listen = lib.mkOption {
              type = lib.types.str;
              default = listen;
              defaultText = lib.literalMD "`api.listenAddress` and `api.port`";
              readOnly = true;
              description = "Where the API listens: set `api.listenAddress` and `api.port`.";
            };
          };
          runner = section "The worker (`nixjail runner`): concurrency, container sizes, caches." {
            image = fixed imageRef "The runner image's tag: set `runner.image`.";
            kick_socket = fixed kickSocket "The socket of nixjail-runner.socket.";
          };
          cache_builder = section "The cache builder (`nixjail cache-builder`) and whether the API queues dependencies jobs for cache builders (`enabled`)." { };
          gc = section "Garbage collection (`nixjail gc`): root retention, how much to free." { };
        };
      };
    };

    apiTokensFile = secretFile ''
      Lines of `ROLE TOKEN [TENANT]` (ROLE: `submitter`, `admin` or `worker`) that the API
      accepts, readable by root only (it reaches the API with LoadCredential).
      A change of the file restarts the API (nixjail-api-tokens.path), which
      reads its new copy. Without it the API asks submitters for no token
      (keep it on loopback then) and refuses the lease endpoints.
    '';

    api = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          The HTTP API (nixjail-api.socket and .service), its spool, and the
          timers that expire leases and collect garbage. One host has it.
        '';
      };
      listenAddress = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1";
        example = "::";
        description = "Address nixjail-api.socket listens on.";
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = 8460;
        description = "Port nixjail-api.socket listens on.";
      };
      openFirewall = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Open the API's port, for remote workers, cache builders and users.";
      };
    };

    runner = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "The worker (nixjail-runner.socket and .service) and Docker.";
      };
      image = lib.mkPackageOption pkgs "nixjail-runner-image" {
        extraDescription = ''
          A `dockerTools` image (a stream or a tarball), loaded into Docker by
          nixjail-runner-image.service; `settings.runner.image` is its tag.
        '';
      };
      apiUrl = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "http://api.example.org:8460";
        description = ''
          The API of another host to lease from: a worker host of its own. Its
          runner then runs all the time (no local API kicks it) and never
          idles out.
        '';
      };
      apiTokenFile = secretFile "A worker token of that API (passed with LoadCredential).";
    };

    cacheBuilder = {
      enable = lib.mkEnableOption "the cache builder, which builds environments into this host's store";
      apiUrl = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "http://api.example.org:8460";
        description = ''
          The API of another host to lease dependencies jobs from. The workers
          then substitute what it built from this host: serve its store with
          `services.nix-serve` (with a `secretKeyFile`: workers take only
          signed environments).
        '';
      };
      apiTokenFile = secretFile "A worker token of that API (passed with LoadCredential).";
    };

    caches = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "http://builder-1.example.org:5000" ];
      description = ''
        Binary caches of the cache builders, which this worker's runner
        substitutes environments from (with `nix copy`, never building them).
        They are not added to the host's own substituters.
      '';
    };

    cachePublicKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "builder-1:bQoJ6hKmEvgJ9V3A8RvQX0qRTr3erbN7HvfuwpDszjM=" ];
      description = ''
        Public keys of the cache builders' signing keys. Added to
        `nix.settings.trusted-public-keys`: the nix-daemon takes a path the
        runner copies from a cache only with one of their signatures.
      '';
    };

    environments = lib.mkOption {
      description = ''
        The catalog of named environments (GET /v1/environments): a submission
        that says `"environment": NAME` gets the entry's shell.nix, and its
        compile and run scripts when it gives none. The cache builder builds
        every entry when it starts and keeps it from `nixjail gc`. Rendered
        into the settings' `environments`.
      '';
      default = { };
      example = lib.literalExpression ''
        {
          gcc = {
            version = "13";
            aliases = [ "c" ];
            shellNix = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.gcc ]; }";
            mainFile = "main.c";
            compileSh = "gcc -O2 -o main main.c";
            runSh = "./main";
          };
        }
      '';
      type = lib.types.attrsOf (
        lib.types.submodule {
          options = {
            version = lib.mkOption {
              type = lib.types.str;
              default = "";
              description = "The toolchain's version, as listed.";
            };
            description = lib.mkOption {
              type = lib.types.str;
              default = "";
              description = "What the environment is, as listed.";
            };
            aliases = lib.mkOption {
              type = lib.types.listOf lib.types.str;
              default = [ ];
              description = "Other names a submission may use for it.";
            };
            shellNix = lib.mkOption {
              type = lib.types.nullOr lib.types.lines;
              default = null;
              description = "The shell.nix, as text (give this or `shellNixFile`).";
            };
            shellNixFile = lib.mkOption {
              type = lib.types.nullOr lib.types.path;
              default = null;
              description = "A file holding the shell.nix (a Nix path is copied into the store).";
            };
            mainFile = lib.mkOption {
              type = lib.types.str;
              default = "main";
              description = "The name a lone source file takes.";
            };
            compileSh = lib.mkOption {
              type = lib.types.nullOr lib.types.lines;
              default = null;
              description = "The compile script a submission gets when it gives none.";
            };
            runSh = lib.mkOption {
              type = lib.types.lines;
              description = "The run script a submission gets when it gives none.";
            };
            # The compatibility front ends' names of it (docs/compat.md), as the
            # settings file writes them: enable the front ends themselves with
            # `settings.compat.judge0.enabled` and the like.
            judge0 = lib.mkOption {
              type = lib.types.nullOr settingsFormat.type;
              default = null;
              example = {
                ids = [ 50 103 ];
                name = "C (GCC)";
              };
              description = "Its Judge0 language: `ids` (Judge0 CE's language ids) and `name`.";
            };
            piston = lib.mkOption {
              type = lib.types.nullOr settingsFormat.type;
              default = null;
              example = {
                language = "c";
                version = "13.2.0";
                aliases = [ "gcc" ];
              };
              description = "Its Piston runtime: `language`, `version` and `aliases`.";
            };
            codapi = lib.mkOption {
              type = lib.types.nullOr settingsFormat.type;
              default = null;
              example = {
                sandbox = "c";
                version = "latest";
              };
              description = "Its codapi sandbox: `sandbox`, `version` and `commands`.";
            };
          };
        }
      );
    };

    callbacks.secretFile = secretFile ''
      The key that signs each callback (HMAC-SHA256), readable by root only: it
      reaches the API with LoadCredential, and the settings'
      `callbacks.secret_file` names the API's copy.
    '';

    gc.enable = lib.mkOption {
      type = lib.types.bool;
      default = cfg.api.enable;
      defaultText = lib.literalExpression "config.services.nixjail.api.enable";
      description = "Remove nixjail's old GC roots and collect the store daily (nixjail-gc.timer).";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = (cfg.runner.apiUrl != null || cfg.cacheBuilder.apiUrl != null) -> !cfg.api.enable;
            message = "services.nixjail.{runner,cacheBuilder}.apiUrl lease from another host's API: set services.nixjail.api.enable = false here.";
          }
          {
            assertion = cfg.caches != [ ] -> cfg.cachePublicKeys != [ ];
            message = "services.nixjail.caches needs services.nixjail.cachePublicKeys: the runner takes only signed environments.";
          }
          {
            assertion = remoteWorker -> cfg.caches != [ ];
            message = "services.nixjail.runner.apiUrl needs services.nixjail.caches: a worker of its own substitutes the environments the cache builders built.";
          }
          {
            assertion = remoteWorker -> cfg.runner.apiTokenFile != null;
            message = "services.nixjail.runner.apiUrl needs services.nixjail.runner.apiTokenFile: the API leases only to worker tokens.";
          }
          {
            assertion = remoteCacheBuilder -> cfg.cacheBuilder.apiTokenFile != null;
            message = "services.nixjail.cacheBuilder.apiUrl needs services.nixjail.cacheBuilder.apiTokenFile: the API leases only to worker tokens.";
          }
          {
            assertion = (cfg.cacheBuilder.enable && config.services.nix-serve.enable) -> config.services.nix-serve.secretKeyFile != null;
            message = "services.nix-serve.secretKeyFile is needed on a cache builder: workers take only signed environments.";
          }
          {
            assertion = cfg.api.enable || cfg.runner.enable || cfg.cacheBuilder.enable;
            message = "services.nixjail is enabled with none of api, runner and cacheBuilder.";
          }
        ];

        services.nixjail.settings = {
          api.tokens_file = lib.mkIf (cfg.apiTokensFile != null) (credential "nixjail-api" "api-tokens");
          runner = {
            # What <nixpkgs> is in submissions: this host's nixpkgs.
            nixpkgs = lib.mkDefault "${pkgs.path}";
            api_url = lib.mkIf (cfg.runner.apiUrl != null) cfg.runner.apiUrl;
            api_token_file = lib.mkIf (cfg.runner.apiTokenFile != null) (
              credential "nixjail-runner" "api-token"
            );
            # Nothing kicks a worker of its own: it waits for work (long polls) until stopped.
            idle_exit_s = lib.mkIf remoteWorker (lib.mkDefault "never");
            # Containers started ahead of need, so a submission's run waits for no start.
            pool_size = lib.mkDefault 2;
            caches = lib.mkIf (cfg.caches != [ ]) cfg.caches;
            trusted_public_keys = lib.mkIf (cfg.cachePublicKeys != [ ]) cfg.cachePublicKeys;
          };
          cache_builder = {
            # The API queues dependencies jobs: for its local cache builder here;
            # an API with remote cache builders sets this itself.
            enabled = lib.mkIf (cfg.api.enable && cfg.cacheBuilder.enable) (lib.mkDefault true);
            nixpkgs = lib.mkDefault "${pkgs.path}";
            api_url = lib.mkIf (cfg.cacheBuilder.apiUrl != null) cfg.cacheBuilder.apiUrl;
            api_token_file = lib.mkIf (cfg.cacheBuilder.apiTokenFile != null) (
              credential "nixjail-cache-builder" "api-token"
            );
          };
        };

        # nixjail and nixjail-runner-image, from this flake's overlay.
        nixpkgs.overlays = [ (import ../nix/overlay.nix) ];

        # Units, tmpfiles and sysusers in the package; the units this host wants
        # are enabled below.
        systemd.packages = [ cfg.package ];
        systemd.tmpfiles.packages = [ cfg.package ];
        environment.systemPackages = [ cfg.package ];
        # Where the units (and `nixjail` run by hand) read their settings.
        environment.etc."nixjail/settings.toml".source = settingsFile;

        users.users.nixjail = {
          isSystemUser = true;
          group = "nixjail";
          home = spoolDir;
          description = "nixjail services";
        };
        users.groups.nixjail = { };
      }

      # The catalog and the callbacks' key.
      {
        assertions = lib.mapAttrsToList (name: entry: {
          assertion = (entry.shellNix == null) != (entry.shellNixFile == null);
          message = "services.nixjail.environments.${name} needs shellNix or shellNixFile, exactly one.";
        }) cfg.environments;
        services.nixjail.settings = {
          environments = lib.mkIf (cfg.environments != { }) (
            lib.mapAttrsToList (
              name: entry:
              {
                inherit name;
                inherit (entry) version description aliases;
                main_file = entry.mainFile;
                run_sh = entry.runSh;
              }
              # TOML has no null: what is not given is left out.
              // lib.optionalAttrs (entry.shellNix != null) { shell_nix = entry.shellNix; }
              // lib.optionalAttrs (entry.shellNixFile != null) { shell_nix_file = "${entry.shellNixFile}"; }
              // lib.optionalAttrs (entry.compileSh != null) { compile_sh = entry.compileSh; }
              // lib.filterAttrs (_: mapping: mapping != null) {
                inherit (entry) judge0 piston codapi;
              }
            ) cfg.environments
          );
          callbacks.secret_file = lib.mkIf (cfg.callbacks.secretFile != null) (
            credential "nixjail-api" "callback-secret"
          );
        };
      }

      (lib.mkIf (cfg.api.enable && cfg.callbacks.secretFile != null) {
        systemd.services.nixjail-api.serviceConfig.LoadCredential = [
          "callback-secret:${cfg.callbacks.secretFile}"
        ];
      })

      (lib.mkIf cfg.api.enable {
        systemd.sockets.nixjail-api = {
          wantedBy = [ "sockets.target" ];
          # The empty entry drops the template's address.
          socketConfig.ListenStream = [
            ""
            listen
          ];
        };
        systemd.services.nixjail-api = {
          restartTriggers = [ settingsFile ];
          serviceConfig.LoadCredential = lib.mkIf (cfg.apiTokensFile != null) [
            "api-tokens:${cfg.apiTokensFile}"
          ];
        };
        networking.firewall.allowedTCPPorts = lib.mkIf cfg.api.openFirewall [ cfg.api.port ];

        systemd.timers.nixjail-expire-leases.wantedBy = [ "timers.target" ];
        systemd.services.nixjail-expire-leases.restartTriggers = [ settingsFile ];
      })

      # LoadCredential= copies the tokens file when the API starts: a change
      # restarts it (its socket holds the connections meanwhile).
      (lib.mkIf (cfg.api.enable && cfg.apiTokensFile != null) {
        systemd.paths.nixjail-api-tokens = {
          description = "Restart the nixjail API when its tokens file changes";
          wantedBy = [ "paths.target" ];
          pathConfig = {
            PathChanged = cfg.apiTokensFile;
            Unit = "nixjail-api-tokens.service";
          };
        };
        systemd.services.nixjail-api-tokens = {
          description = "Restart the nixjail API for its new tokens";
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${config.systemd.package}/bin/systemctl try-restart nixjail-api.service";
          };
        };
      })

      (lib.mkIf cfg.gc.enable {
        systemd.timers.nixjail-gc.wantedBy = [ "timers.target" ];
        systemd.services.nixjail-gc = {
          restartTriggers = [ settingsFile ];
          path = [ config.nix.package ];
        };
      })

      (lib.mkIf cfg.runner.enable {
        virtualisation.docker.enable = true;

        # Loads the image once per image: the runner starts often, docker load is slow.
        systemd.services.nixjail-runner-image = {
          description = "Load the nixjail runner image into Docker";
          requires = [ "docker.service" ];
          after = [ "docker.service" ];
          # Loaded at boot, so the runner's first start does not wait for it.
          wantedBy = [ "multi-user.target" ];
          path = [ config.virtualisation.docker.package ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
          };
          script = ''
            if ! docker image inspect ${lib.escapeShellArg imageRef} >/dev/null 2>&1; then
              if [ -x ${cfg.runner.image} ]; then
                ${cfg.runner.image} | docker load
              else
                docker load -i ${cfg.runner.image}
              fi
            fi
          '';
        };

        systemd.sockets.nixjail-runner.wantedBy = [ "sockets.target" ];
        systemd.services.nixjail-runner = lib.mkMerge [
          {
            restartTriggers = [ settingsFile ];
            requires = [ "nixjail-runner-image.service" ];
            after = [ "nixjail-runner-image.service" ];
            # Environments are substituted with the host's nix.
            path = [ config.nix.package ];
            serviceConfig.LoadCredential = lib.mkIf (cfg.runner.apiTokenFile != null) [
              "api-token:${cfg.runner.apiTokenFile}"
            ];
          }
          # A failed runner leaves leases behind: a pass of expiry takes them back at once.
          (lib.mkIf cfg.api.enable {
            onFailure = [ "nixjail-expire-leases.service" ];
          })
          # No local API kicks a worker of its own: it starts at boot and
          # waits for work (idle_exit_s = "never") until stopped.
          (lib.mkIf remoteWorker {
            wantedBy = [ "multi-user.target" ];
            wants = [ "network-online.target" ];
            after = [ "network-online.target" ];
          })
        ];

        # The nix-daemon takes a path the runner copies from a cache only with
        # one of these signatures. The caches are not the host's substituters.
        nix.settings.trusted-public-keys = cfg.cachePublicKeys;
      })

      (lib.mkIf cfg.cacheBuilder.enable {
        systemd.services.nixjail-cache-builder = lib.mkMerge [
          {
            wantedBy = [ "multi-user.target" ];
            restartTriggers = [ settingsFile ];
            # The host's nix (builds, and the job's own nix-daemon), nsjail for
            # the jail and the daemon's seccomp policy, bash for its script,
            # mount and umount for each job's build tmpfs.
            path = [
              config.nix.package
              pkgs.nsjail
              pkgs.bash
              pkgs.util-linux
            ];
            serviceConfig.LoadCredential = lib.mkIf (cfg.cacheBuilder.apiTokenFile != null) [
              "api-token:${cfg.cacheBuilder.apiTokenFile}"
            ];
          }
          (lib.mkIf cfg.api.enable {
            onFailure = [ "nixjail-expire-leases.service" ];
          })
        ];
      })
    ]
  );
}
