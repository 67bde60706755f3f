# Evaluates nixos/module.nix for one host configuration with nixpkgs' real
# lib.evalModules, the NixOS option declarations of ./nixos-options.nix and
# the stand-in pkgs of ./pkgs.nix, and returns what tests/nixos checks as
# plain data (for `nix-instantiate --eval --strict --json`).
#
#   nix-instantiate --eval --strict --json tests/nixos/eval.nix \
#     --argstr libDir ../shared/nixpkgs-lib/lib --argstr host nixos/examples/worker.nix
{
  libDir,
  host,
  # Further modules (files), as a test adds them.
  extra ? [ ],
}:

let
  lib = import libDir;

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      ../../nixos/module.nix
      host
      (
        { config, ... }:
        {
          _module.args.pkgs = import ./pkgs.nix {
            inherit lib;
            inherit (config.nixpkgs) overlays;
          };
        }
      )
    ]
    ++ extra;
  };
  inherit (evaluated) config;
  cfg = config.services.nixjail;

  pathEntry = entry: if lib.isString entry then entry else entry.outPath;
  commonUnit = unit: {
    inherit (unit) enable wantedBy;
    unitConfig = unit.unitConfig;
  };
  # Every stand-in package by its store path, with the commands it has.
  packages = lib.listToAttrs (
    map (pkg: lib.nameValuePair pkg.outPath pkg.nixjailTestBins) (
      lib.filter (value: lib.isDerivation value && value ? nixjailTestBins) (
        lib.attrValues evaluated._module.args.pkgs
      )
      ++ [ cfg.package ]
    )
  );
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
  maintainers = config.meta.maintainers;
  settings = cfg.settings;
  etc = lib.mapAttrs (_: file: {
    inherit (file) enable target mode;
    source = toString file.source;
    value = file.source.nixjailTestValue or null;
  }) config.environment.etc;
  package = {
    inherit (cfg.package) name;
    path = cfg.package.outPath;
    mainProgram = cfg.package.meta.mainProgram;
  };
  image = {
    inherit (cfg.runner.image) imageName imageTag;
    path = cfg.runner.image.outPath;
    includeNixDB = cfg.runner.image.nixjailTestImage.includeNixDB;
  };
  inherit packages;
  systemdPackages = map (pkg: pkg.outPath) config.systemd.packages;
  tmpfilesPackages = map (pkg: pkg.outPath) config.systemd.tmpfiles.packages;
  systemPackages = map (pkg: pkg.outPath) config.environment.systemPackages;
  services = lib.mapAttrs (
    _: unit:
    commonUnit unit
    // {
      inherit (unit) serviceConfig environment;
      path = map pathEntry unit.path;
      restartTriggers = map toString (lib.flatten unit.restartTriggers);
    }
  ) config.systemd.services;
  sockets = lib.mapAttrs (
    _: unit:
    commonUnit unit
    // {
      inherit (unit) socketConfig listenStreams;
    }
  ) config.systemd.sockets;
  timers = lib.mapAttrs (_: unit: commonUnit unit // { inherit (unit) timerConfig; }) config.systemd.timers;
  paths = lib.mapAttrs (_: unit: commonUnit unit // { inherit (unit) pathConfig; }) config.systemd.paths;
  users = lib.mapAttrs (_: user: {
    inherit (user)
      name
      isSystemUser
      group
      home
      ;
  }) config.users.users;
  groups = lib.attrNames config.users.groups;
  nixSettings = {
    inherit (config.nix.settings) substituters trusted-substituters trusted-public-keys;
  };
  firewallTCPPorts = config.networking.firewall.allowedTCPPorts;
  docker = config.virtualisation.docker.enable;
  nixServe = {
    inherit (config.services.nix-serve)
      enable
      port
      openFirewall
      secretKeyFile
      ;
  };
}
