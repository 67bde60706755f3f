# The image every submission runs in, as images/runner/build makes it on
# Debian: python3 (container init), nix, bash and nsjail, container init in
# /opt/nixjail/container_init, the same nix.conf and entry point.
#
# A stream (streamLayeredImage): `$out | docker load`. Its store paths stay
# in the host's store, which matters: a worker mounts the host's /nix/store
# read-only over the image's when a submission's environment comes from the
# cache builders, so the image's own tools must be found there too.
{
  lib,
  dockerTools,
  runCommand,
  python3,
  nix,
  nsjail,
  bashInteractive,
  coreutils,
}:

let
  containerInit = lib.fileset.toSource {
    root = ../container_init;
    fileset = lib.fileset.fileFilter (file: file.hasExt "py") ../container_init;
  };

  # What the Debian image holds outside its packages.
  layout = runCommand "nixjail-runner-layout" { } ''
    mkdir -p $out/opt/nixjail $out/etc/nix $out/usr/local/bin $out/tmp
    cp -r ${containerInit} $out/opt/nixjail/container_init
    ln -s ${lib.getExe nsjail} $out/usr/local/bin/nsjail
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
