# Declarations of the NixOS options nixos/module.nix sets, for evaluating it
# without nixpkgs' NixOS modules. Each carries the type NixOS gives it (as of
# nixpkgs 26.05: nixos/lib/systemd-unit-options.nix, nixos/lib/systemd-lib.nix,
# nixos/modules/config/users-groups.nix, nixos/modules/config/nix.nix, …),
# written here for these tests, with the few defaults and derived values the
# tests look at (a service's default PATH, the [Unit] keys of dependencies,
# the assertions users-groups makes about the users the module adds).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  nixosConfig = config;

  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # A value of a [Section]: lists are repeated keys and concatenate, anything
  # else must be defined once (or with priorities).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.isList (lib.head defs').value then
        lib.concatMap (
          def:
          if builtins.typeOf def.value == "list" then
            def.value
          else
            throw "The definitions of ${lib.showOption loc} mix lists and non-lists."
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  sectionOf = types.attrsOf unitOption;

  serviceTypes = [
    "exec"
    "simple"
    "forking"
    "oneshot"
    "dbus"
    "notify"
    "notify-reload"
    "idle"
  ];
  restartValues = [
    "no"
    "on-success"
    "on-failure"
    "on-abnormal"
    "on-abort"
    "always"
  ];
  checkService =
    attrs:
    let
      value = name: (attrs.${name}.content or attrs.${name});
    in
    (!(attrs ? Type) || lib.elem (value "Type") serviceTypes)
    && (!(attrs ? Restart) || lib.elem (value "Restart") restartValues);

  unitList =
    description:
    mkOption {
      type = types.listOf unitNameType;
      default = [ ];
      inherit description;
    };

  # What every unit has (commonUnitOptions and stage2CommonUnitOptions).
  commonUnit =
    { config, name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = "Whether the unit exists.";
        };
        description = mkOption {
          type = types.singleLineStr;
          default = "";
          description = "Description=.";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Documentation=.";
        };
        wantedBy = unitList "Units that want this one.";
        requiredBy = unitList "Units that require this one.";
        upheldBy = unitList "Units that uphold this one.";
        aliases = unitList "Aliases of this unit.";
        requires = unitList "Requires=.";
        wants = unitList "Wants=.";
        upholds = unitList "Upholds=.";
        after = unitList "After=.";
        before = unitList "Before=.";
        bindsTo = unitList "BindsTo=.";
        partOf = unitList "PartOf=.";
        conflicts = unitList "Conflicts=.";
        requisite = unitList "Requisite=.";
        onFailure = unitList "OnFailure=.";
        onSuccess = unitList "OnSuccess=.";
        unitConfig = mkOption {
          type = sectionOf;
          default = { };
          description = "The [Unit] section.";
        };
        restartTriggers = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
          description = "A change of any of these restarts the unit on a switch.";
        };
        reloadTriggers = mkOption {
          type = types.listOf unitOption;
          default = [ ];
          description = "A change of any of these reloads the unit on a switch.";
        };
        overrideStrategy = mkOption {
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
          default = "asDropinIfExists";
          description = "A drop-in when the unit exists in systemd.packages.";
        };
      };
      # As nixos/lib/systemd-lib.nix's unitConfig turns them into [Unit] keys.
      config.unitConfig =
        let
          join = lib.concatStringsSep " ";
          keys = {
            Requires = config.requires;
            Wants = config.wants;
            Upholds = config.upholds;
            After = config.after;
            Before = config.before;
            BindsTo = config.bindsTo;
            PartOf = config.partOf;
            Conflicts = config.conflicts;
            Requisite = config.requisite;
            OnFailure = config.onFailure;
            OnSuccess = config.onSuccess;
          };
        in
        lib.mapAttrs (_: join) (lib.filterAttrs (_: value: value != [ ]) keys)
        // lib.optionalAttrs (config.description != "") { Description = config.description; }
        // lib.optionalAttrs (config.restartTriggers != [ ]) {
          X-Restart-Triggers = "${pkgs.writeText "X-Restart-Triggers-${name}" (
            toString (map toString (lib.flatten config.restartTriggers))
          )}";
        };
    };

  serviceUnit =
    { config, name, ... }:
    {
      options = {
        environment = mkOption {
          type =
            with types;
            attrsOf (
              nullOr (oneOf [
                str
                path
                package
              ])
            );
          default = { };
          description = "Environment= of the service.";
        };
        path = mkOption {
          type =
            with types;
            listOf (oneOf [
              package
              str
            ]);
          default = [ ];
          description = "Packages whose bin and sbin go on the service's PATH.";
        };
        serviceConfig = mkOption {
          type = types.addCheck sectionOf checkService;
          default = { };
          description = "The [Service] section.";
        };
        script = mkOption {
          type = types.lines;
          default = "";
          description = "The main process, as a shell script.";
        };
        scriptArgs = mkOption {
          type = types.str;
          default = "";
          description = "Its arguments.";
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
          description = "ExecStartPre=, as a shell script.";
        };
        postStart = mkOption {
          type = types.lines;
          default = "";
          description = "ExecStartPost=, as a shell script.";
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
          description = "Restart on a switch when changed.";
        };
        stopIfChanged = mkOption {
          type = types.bool;
          default = true;
          description = "Stop with the old unit, start with the new one.";
        };
        startAt = mkOption {
          type = with types; either str (listOf str);
          default = [ ];
          description = "A timer for this service.";
        };
      };
      config = lib.mkMerge [
        {
          # A stage 2 service's PATH: its `path` and then these.
          path = lib.mkAfter [
            pkgs.coreutils
            pkgs.findutils
            pkgs.gnugrep
            pkgs.gnused
            nixosConfig.systemd.package
          ];
          environment.PATH = lib.mkIf (config.path != [ ]) "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
        }
        (lib.mkIf (config.script != "") {
          serviceConfig.ExecStart =
            "${pkgs.writeShellScriptBin "${name}-start" config.script}/bin/${name}-start "
            + config.scriptArgs;
        })
        (lib.mkIf (config.preStart != "") {
          serviceConfig.ExecStartPre = [
            "${pkgs.writeShellScriptBin "${name}-pre-start" config.preStart}/bin/${name}-pre-start"
          ];
        })
      ];
    };

  socketUnit = {
    options = {
      listenStreams = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "ListenStream= entries.";
      };
      listenDatagrams = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "ListenDatagram= entries.";
      };
      socketConfig = mkOption {
        type = sectionOf;
        default = { };
        description = "The [Socket] section.";
      };
    };
  };

  timerUnit = {
    options.timerConfig = mkOption {
      type = sectionOf;
      default = { };
      description = "The [Timer] section.";
    };
  };

  pathUnit = {
    options.pathConfig = mkOption {
      type = sectionOf;
      default = { };
      description = "The [Path] section.";
    };
  };

  units =
    modules:
    mkOption {
      type = types.attrsOf (types.submodule ([ commonUnit ] ++ modules));
      default = { };
      description = "systemd units.";
    };

  # nix.settings' values (nixos/modules/config/nix.nix: semanticConfType).
  nixConfAtom = types.oneOf [
    types.str
    types.int
    types.bool
    types.float
    types.path
    types.package
  ];
  nixConfType = types.either nixConfAtom (types.listOf nixConfAtom);

  maintainer = lib.mkOptionType {
    name = "maintainer";
    check = person: lib.elem person (lib.attrValues lib.maintainers);
    merge = loc: defs: lib.listToAttrs [ (lib.nameValuePair (lib.last defs).file (lib.last defs).value) ];
  };

  overlayType = lib.mkOptionType {
    name = "nixpkgs-overlay";
    description = "nixpkgs overlay";
    check = lib.isFunction;
    merge = lib.mergeOneOption;
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
      description = "Conditions that must hold, with messages.";
    };
    warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
      description = "Messages shown on evaluation.";
    };
    meta.maintainers = mkOption {
      # Merged into an attribute set: each module's file to its maintainers.
      type = types.listOf maintainer // {
        merge =
          loc: defs:
          lib.zipAttrs (
            lib.concatMap (
              def:
              map (person: maintainer.merge loc [
                {
                  inherit (def) file;
                  value = person;
                }
              ]) def.value
            ) defs
          );
      };
      default = [ ];
      description = "Maintainers of each module.";
    };
    nixpkgs.overlays = mkOption {
      type = types.listOf overlayType;
      default = [ ];
      description = "Overlays of the pkgs every module gets.";
    };

    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages in the system profile.";
    };
    environment.etc = mkOption {
      default = { };
      description = "Files in /etc.";
      type = types.attrsOf (
        types.submodule (
          { name, config, ... }:
          {
            options = {
              enable = mkOption {
                type = types.bool;
                default = true;
                description = "Whether the file exists.";
              };
              target = mkOption {
                type = types.str;
                default = name;
                description = "Its path below /etc.";
              };
              text = mkOption {
                type = types.nullOr types.lines;
                default = null;
                description = "Its text.";
              };
              source = mkOption {
                type = types.path;
                description = "Its source.";
              };
              mode = mkOption {
                type = types.str;
                default = "symlink";
                description = "symlink, or the mode of a copy.";
              };
              user = mkOption {
                type = types.str;
                default = "+0";
                description = "Owner of a copy.";
              };
              group = mkOption {
                type = types.str;
                default = "+0";
                description = "Group of a copy.";
              };
            };
            config.source = lib.mkIf (config.text != null) (
              lib.mkDerivedConfig (lib.mkOptionDefault config.text) (pkgs.writeText name)
            );
          }
        )
      );
    };

    users.users = mkOption {
      default = { };
      description = "User accounts.";
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              name = mkOption {
                type = types.passwdEntry types.str;
                default = name;
                description = "The user's name.";
              };
              uid = mkOption {
                type = types.nullOr types.int;
                default = null;
                description = "The user's id.";
              };
              isSystemUser = mkOption {
                type = types.bool;
                default = false;
                description = "A system user.";
              };
              isNormalUser = mkOption {
                type = types.bool;
                default = false;
                description = "A normal user.";
              };
              group = mkOption {
                type = types.str;
                default = "";
                description = "The user's primary group.";
              };
              extraGroups = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Further groups.";
              };
              home = mkOption {
                type = types.passwdEntry types.path;
                default = "/var/empty";
                description = "The home directory.";
              };
              createHome = mkOption {
                type = types.bool;
                default = false;
                description = "Whether activation makes the home directory.";
              };
              description = mkOption {
                type = types.passwdEntry types.str;
                default = "";
                description = "The GECOS field.";
              };
            };
          }
        )
      );
    };
    users.groups = mkOption {
      default = { };
      description = "Groups.";
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              name = mkOption {
                type = types.passwdEntry types.str;
                default = name;
                description = "The group's name.";
              };
              gid = mkOption {
                type = types.nullOr types.int;
                default = null;
                description = "The group's id.";
              };
              members = mkOption {
                type = types.listOf (types.passwdEntry types.str);
                default = [ ];
                description = "Its members.";
              };
            };
          }
        )
      );
    };

    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
      description = "systemd.";
    };
    systemd.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages whose lib/systemd/system units are installed.";
    };
    systemd.tmpfiles.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages whose lib/tmpfiles.d files are installed.";
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "tmpfiles.d lines.";
    };
    systemd.services = units [ serviceUnit ];
    systemd.sockets = units [ socketUnit ];
    systemd.timers = units [ timerUnit ];
    systemd.paths = units [ pathUnit ];

    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
      description = "The Nix of the host.";
    };
    nix.settings = mkOption {
      default = { };
      description = "nix.conf.";
      type = types.submodule {
        freeformType = types.attrsOf nixConfType;
        options = {
          substituters = mkOption {
            type = types.listOf types.str;
            default = [ "https://cache.nixos.org/" ];
            description = "Binary caches.";
          };
          trusted-substituters = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "Binary caches unprivileged users may use.";
          };
          trusted-public-keys = mkOption {
            type = types.listOf types.str;
            default = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
            description = "Keys of the binary caches.";
          };
          sandbox = mkOption {
            type = types.either types.bool (types.enum [ "relaxed" ]);
            default = true;
            description = "The build sandbox.";
          };
        };
      };
    };

    virtualisation.docker.enable = mkOption {
      type = types.bool;
      default = false;
      description = "dockerd.";
    };
    virtualisation.docker.package = mkOption {
      type = types.package;
      default = pkgs.docker;
      description = "Docker.";
    };

    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      description = "Open TCP ports.";
    };

    services.nix-serve = {
      enable = lib.mkEnableOption "nix-serve, the standalone Nix binary cache server";
      port = mkOption {
        type = types.port;
        default = 5000;
        description = "Its port.";
      };
      bindAddress = mkOption {
        type = types.str;
        default = "0.0.0.0";
        description = "Its address.";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open its port.";
      };
      secretKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The signing key.";
      };
      extraParams = mkOption {
        type = types.separatedString " ";
        default = "";
        description = "Further arguments.";
      };
    };
  };

  config = {
    # What the NixOS modules of these options derive that the tests look at.
    networking.firewall.allowedTCPPorts = lib.mkIf (
      config.services.nix-serve.enable && config.services.nix-serve.openFirewall
    ) [ config.services.nix-serve.port ];
    virtualisation.docker.package = lib.mkDefault pkgs.docker;

    # users-groups.nix's checks of every user.
    assertions = lib.concatLists (
      lib.mapAttrsToList (name: user: [
        {
          assertion = user.isSystemUser != user.isNormalUser;
          message = "Exactly one of users.users.${name}.isSystemUser and users.users.${name}.isNormalUser must be set.";
        }
        {
          assertion = user.group != "" && config.users.groups ? ${user.group};
          message = "users.users.${name}.group must name a group of users.groups.";
        }
      ]) config.users.users
    );
  };
}
