# The image every submission runs in, as images/runner/build makes it on
# Debian: python3 (container init), nix, bash and nsjail, container init in
# /opt/nixjail/container_init and the jail kit beside it in /opt/nixjail/jailkit,
# the same nix.conf and entry point.
#
# A stream (streamLayeredImage): `$out | docker load`. Its store paths stay
# in the host's store, which matters: a worker mounts the host's /nix/store
# read-only over the image's when a submission's environment comes from the
# cache builders, so the image's own tools must be found there too.
#
# Every tool here (bash, nix, python3, nsjail) lives in /nix/store, and a
# submission that builds its own environment gets an empty private store at
# /nix in its jails: container init mounts the image's store paths into it,
# read-only, and starts the private store's database from the image's
# (includeNixDB), so Nix counts them as valid and the tools keep working
# while the build adds paths beside them (container_init/workspace.py).
{
  lib,
  dockerTools,
  runCommand,
  closureInfo,
  python3,
  nix,
  nsjail,
  bashInteractive,
  coreutils,
  pkgsStatic,
}:

let
  containerInit = lib.fileset.toSource {
    root = ../container_init;
    fileset = lib.fileset.fileFilter (file: file.hasExt "py") ../container_init;
  };

  # The jail kit, a top-level package `jailkit` beside container_init.
  jailkit = lib.fileset.toSource {
    root = ../src/nixjail/jailkit;
    fileset = lib.fileset.fileFilter (file: file.hasExt "py") ../src/nixjail/jailkit;
  };

  # What the jails run: kept in a build's private store (container init reads
  # /opt/nixjail/image-store-paths).
  jailTools = closureInfo {
    rootPaths = [
      nix
      bashInteractive
      coreutils
    ];
  };

  # What the Debian image holds outside its packages.
  layout = runCommand "nixjail-runner-layout" { } ''
    mkdir -p $out/opt/nixjail $out/etc/nix $out/usr/local/bin $out/tmp
    cp -r ${containerInit} $out/opt/nixjail/container_init
    cp -r ${jailkit} $out/opt/nixjail/jailkit
    cp ${jailTools}/store-paths $out/opt/nixjail/image-store-paths
    ln -s ${lib.getExe nsjail} $out/usr/local/bin/nsjail
    # The compile and run jails' /bin/bash and /bin/sh, which container init copies
    # from this one path (images/runner/build links Debian's bash-static there).
    mkdir -p $out/opt/nixjail/static
    ln -s ${pkgsStatic.bash}/bin/bash $out/opt/nixjail/static/bash
    # As images/runner/build writes it: single-user nix, no sandbox, no caches.
    cat >$out/etc/nix/nix.conf <<'CONF'
    build-users-group =
    sandbox = false
    substituters =
    experimental-features = nix-command
    CONF
  '';
in
dockerTools.streamLayeredImage {
  name = "nixjail-runner";
  # tag: the hash of the image's contents, so a new image never reuses a tag.
  includeNixDB = true;

  contents = [
    layout
    python3
    nix
    nsjail
    bashInteractive
    coreutils
    dockerTools.fakeNss
  ];

  extraCommands = ''
    mkdir -p nix/var/nix tmp
    chmod 1777 tmp
  '';

  config = {
    Entrypoint = [
      "python3"
      "-I"
      "-u"
      "/opt/nixjail/container_init/nixjail_init.py"
    ];
    Cmd = [ ];
    Env = [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
      "LANG=C.UTF-8"
    ];
    Labels."org.nixjail.role" = "runner-image";
  };
}
