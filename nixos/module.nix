# nixjail on NixOS.
#
# The units themselves come from the package (lib/systemd/system, rendered
# from nixos/units/*.in: one definition for NixOS and every other host, and the
# one tests/systemd boots). This module enables the ones a host needs and adds
# what is specific to it in drop-ins: the settings file, secrets as
# credentials, the API's address, the runner image, PATH.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.nixjail;
  settingsFormat = pkgs.formats.toml { };

  # nixjail is not in nixpkgs: its own expressions, built with this host's pkgs.
  nixjailPackages = {
    nixjail = pkgs.callPackage ../nix/package.nix { };
    runner-image = pkgs.callPackage ../nix/runner-image.nix { };
  };

  # TOML has no null: an unset optional setting is left out (its default applies).
  settingsFile = settingsFormat.generate "nixjail.toml" (
    lib.filterAttrsRecursive (_: value: value != null) cfg.settings
  );

  imageRef = "${cfg.runner.image.imageName}:${cfg.runner.image.imageTag}";

  # Credentials land in /run/credentials/UNIT/NAME; the settings name that path.
  credential = unit: name: "/run/credentials/${unit}.service/${name}";

  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.settings.api.listen));

  # Every unit reads the same settings file, given by a drop-in: a change of
  # settings changes the units, so switching restarts them.
  common = {
    environment.NIXJAIL_SETTINGS = "${settingsFile}";
  };

  freeformSection =
    options:
    lib.mkOption {
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        inherit options;
      };
      default = { };
    };
in
{
  options.services.nixjail = {
    enable = lib.mkEnableOption "nixjail, a service that runs untrusted submissions bringing their own Nix toolchain";

    package = lib.mkPackageOption nixjailPackages "nixjail" { pkgsText = "nixjail's packages"; };

    settings = lib.mkOption {
      description = ''
        nixjail's settings, written as TOML to the file every unit reads
        (`NIXJAIL_SETTINGS`). See `src/nixjail/settings.py` for every key;
        the module fills in the paths of its units, secrets and image.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          api = freeformSection {
            listen = lib.mkOption {
              type = lib.types.str;
              default = "127.0.0.1:8460";
              example = "[::]:8460";
              description = "HOST:PORT of the API; nixjail-api.socket listens there.";
            };
          };
          runner = freeformSection { };
          cache_builder = freeformSection { };
        };
      };
    };

    apiTokensFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/secrets/nixjail-api-tokens";
      description = ''
        Lines of `ROLE TOKEN` (ROLE: `submitter` or `worker`) that the API
        accepts. Passed to the API with LoadCredential, so it may be readable
        by root only. Without it the API asks for no token: keep it on
        loopback then.
      '';
    };

    api = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          The HTTP API (nixjail-api.socket and .service), its spool, and the
          timers that expire leases and collect garbage. One host has it.
        '';
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
      image = lib.mkPackageOption nixjailPackages "runner-image" {
        pkgsText = "nixjail's packages";
        extraDescription = ''
          A `dockerTools` image (stream or tarball), loaded into Docker by
          nixjail-runner-image.service; `settings.runner.image` is its tag.
        '';
      };
      apiUrl = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "http://api.example.org:8460";
        description = ''
          The API of another host to lease from: a worker host of its own. Its
          runner then runs all the time (no local API kicks it).
        '';
      };
      apiTokenFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        description = "A worker token of that API (passed with LoadCredential).";
      };
    };

    cacheBuilder = {
      enable = lib.mkEnableOption "the cache builder, which builds environments and serves them with nix-serve";
      apiUrl = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "http://api.example.org:8460";
        description = "The API of another host to lease dependencies jobs from.";
      };
      apiTokenFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        description = "A worker token of that API (passed with LoadCredential).";
      };
      secretKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        example = "/run/secrets/nixjail-cache.sec";
        description = ''
          Key that nix-serve signs the environments with
          (`nix-store --generate-binary-cache-key`). Also passed to
          nixjail-cache-builder.service as the credential `signing-key`.
        '';
      };
    };

    nixServe = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = cfg.cacheBuilder.enable;
        defaultText = lib.literalExpression "config.services.nixjail.cacheBuilder.enable";
        description = "Serve this host's store to the workers with nix-serve.";
      };
      bindAddress = lib.mkOption {
        type = lib.types.str;
        default = "0.0.0.0";
        description = "Address nix-serve listens on.";
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = 5000;
        description = "Port nix-serve listens on.";
      };
      openFirewall = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Open nix-serve's port to the workers.";
      };
    };

    caches = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "http://builder-1.example.org:5000" ];
      description = ''
        Binary caches of the cache builders, which this worker substitutes
        environments from.
      '';
    };

    cachePublicKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "builder-1:bQoJ6hKmEvgJ9V3A8RvQX0qRTr3erbN7HvfuwpDszjM=" ];
      description = "Public keys of the cache builders' signing keys.";
    };

    gc.enable = lib.mkOption {
      type = lib.types.bool;
      default = cfg.api.enable;
      defaultText = lib.literalExpression "config.services.nixjail.api.enable";
      description = "Collect ended submissions hourly (nixjail-gc.timer).";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = cfg.nixServe.enable -> cfg.cacheBuilder.secretKeyFile != null;
            message = "services.nixjail.cacheBuilder.secretKeyFile is needed: workers only take signed environments.";
          }
          {
            assertion = (cfg.runner.apiUrl != null || cfg.cacheBuilder.apiUrl != null) -> !cfg.api.enable;
            message = "services.nixjail.{runner,cacheBuilder}.apiUrl lease from another host's API: disable api.enable here.";
          }
        ];

        services.nixjail.settings = {
          # The directories of the units (StateDirectory, RuntimeDirectory).
          spool_dir = lib.mkDefault "/var/lib/nixjail";
          run_dir = lib.mkDefault "/run/nixjail";
          api.tokens_file = lib.mkIf (cfg.apiTokensFile != null) (
            lib.mkDefault (credential "nixjail-api" "api-tokens")
          );
          runner = {
            image = lib.mkDefault imageRef;
            kick_socket = lib.mkDefault "/run/nixjail/runner.sock";
            # What <nixpkgs> is in submissions: this host's nixpkgs.
            nixpkgs = lib.mkDefault "${pkgs.path}";
            api_url = lib.mkDefault cfg.runner.apiUrl;
            api_token_file = lib.mkIf (cfg.runner.apiTokenFile != null) (
              lib.mkDefault (credential "nixjail-runner" "api-token")
            );
            caches = lib.mkDefault cfg.caches;
            trusted_public_keys = lib.mkDefault cfg.cachePublicKeys;
          };
          cache_builder = {
            enabled = lib.mkDefault (cfg.cacheBuilder.enable || cfg.caches != [ ]);
            nixpkgs = lib.mkDefault "${pkgs.path}";
            api_url = lib.mkDefault cfg.cacheBuilder.apiUrl;
            api_token_file = lib.mkIf (cfg.cacheBuilder.apiTokenFile != null) (
              lib.mkDefault (credential "nixjail-cache-builder" "api-token")
            );
          };
        };

        # Units in the package; the ones this host wants are enabled below.
        systemd.packages = [ cfg.package ];
        environment.systemPackages = [ cfg.package ];

        users.users.nixjail = {
          isSystemUser = true;
          group = "nixjail";
          home = "/var/lib/nixjail";
          description = "nixjail services";
        };
        users.groups.nixjail = { };
      }

      (lib.mkIf cfg.api.enable {
        systemd.sockets.nixjail-api = {
          wantedBy = [ "sockets.target" ];
          # The empty entry drops the template's address.
          socketConfig.ListenStream = [
            ""
            cfg.settings.api.listen
          ];
        };
        systemd.services.nixjail-api = lib.mkMerge [
          common
          {
            serviceConfig.LoadCredential = lib.mkIf (cfg.apiTokensFile != null) [
              "api-tokens:${cfg.apiTokensFile}"
            ];
          }
        ];
        systemd.timers.nixjail-expire-leases.wantedBy = [ "timers.target" ];
        systemd.services.nixjail-expire-leases = common;
        networking.firewall.allowedTCPPorts = lib.mkIf cfg.api.openFirewall [ listenPort ];
      })

      (lib.mkIf cfg.gc.enable {
        systemd.timers.nixjail-gc.wantedBy = [ "timers.target" ];
        systemd.services.nixjail-gc = common // {
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
          common
          {
            requires = [ "nixjail-runner-image.service" ];
            after = [ "nixjail-runner-image.service" ];
            # Environments are substituted with the host's nix.
            path = [ config.nix.package ];
            serviceConfig.LoadCredential = lib.mkIf (cfg.runner.apiTokenFile != null) [
              "api-token:${cfg.runner.apiTokenFile}"
            ];
          }
          # No local API kicks a worker host of its own: it runs all the time,
          # and starts again when it exits after idling.
          (lib.mkIf (cfg.runner.apiUrl != null) {
            wantedBy = [ "multi-user.target" ];
            serviceConfig.Restart = "always";
          })
        ];

        # The cache builders' caches for the environments. The runner itself
        # substitutes with max-jobs = 0, so an environment that is missing or
        # wrongly signed fails there instead of being built on this worker;
        # the host's own builds are unaffected.
        nix.settings = lib.mkIf (cfg.caches != [ ]) {
          substituters = cfg.caches;
          trusted-substituters = cfg.caches;
          trusted-public-keys = cfg.cachePublicKeys;
        };
      })

      (lib.mkIf cfg.cacheBuilder.enable {
        systemd.services.nixjail-cache-builder = lib.mkMerge [
          common
          {
            wantedBy = [ "multi-user.target" ];
            # Builds go through the nix-daemon; each one runs in nsjail.
            path = [
              config.nix.package
              pkgs.nsjail
            ];
            serviceConfig.LoadCredential =
              lib.optional (cfg.cacheBuilder.secretKeyFile != null) "signing-key:${cfg.cacheBuilder.secretKeyFile}"
              ++ lib.optional (cfg.cacheBuilder.apiTokenFile != null) "api-token:${cfg.cacheBuilder.apiTokenFile}";
          }
        ];
      })

      (lib.mkIf cfg.nixServe.enable {
        # nix-serve signs what it serves; its module loads the key as a credential.
        services.nix-serve = {
          enable = true;
          inherit (cfg.nixServe) bindAddress port openFirewall;
          secretKeyFile = "${cfg.cacheBuilder.secretKeyFile}";
        };
      })
    ]
  );
}
