# A stand-in for nixpkgs' `pkgs` with just what nixos/module.nix,
# nix/overlay.nix, nix/package.nix and nix/runner-image.nix use, for
# evaluating the module without nixpkgs: packages are attribute sets that look
# like derivations (`type = "derivation"`, an `outPath`), each saying which
# commands it has in bin/ (`nixjailTestBins`), so the tests can tell what a
# unit's PATH holds.
#
# `formats.toml` is this file's own minimal version, not nixpkgs'
# pkgs/pkgs-lib/formats.nix (which is not available here): the same type
# (bool, int, float, string, path, attribute sets and lists of them; no null),
# and a `generate` that keeps the value it was given (`nixjailTestValue`).
{ lib, overlays }:

let
  # Not a real store path hash: the tests never build anything.
  hashOf = name: builtins.substring 0 32 (builtins.hashString "sha256" name);
  fake =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${hashOf name}-${name}";
      drvPath = "/nix/store/${hashOf "drv-${name}"}-${name}.drv";
      outputs = [ "out" ];
      meta = { };
      nixjailTestBins = [ ];
    }
    // attrs;
  tool =
    name: bins:
    fake name {
      nixjailTestBins = bins;
      meta.mainProgram = lib.head bins;
    };

  noNull =
    value:
    if value == null then
      throw "TOML has no null"
    else if lib.isAttrs value && !lib.isDerivation value then
      lib.all noNull (lib.attrValues value)
    else if lib.isList value then
      lib.all noNull value
    else
      true;

  base = final: {
    inherit lib;
    path = "/nix/store/${hashOf "nixpkgs"}-source";

    callPackage =
      fn: args:
      let
        f = if lib.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (lib.functionArgs f) final // args);

    formats.toml =
      { }:
      {
        type =
          let
            valueType =
              lib.types.oneOf [
                lib.types.bool
                lib.types.int
                lib.types.float
                lib.types.str
                lib.types.path
                (lib.types.attrsOf valueType)
                (lib.types.listOf valueType)
              ]
              // {
                description = "TOML value";
              };
          in
          valueType;
        generate =
          name: value:
          assert noNull value;
          fake name { nixjailTestValue = value; };
      };

    writeText = name: _text: fake name { };
    writeShellScript = name: _text: fake name { };
    writeShellScriptBin = name: _text: fake name { nixjailTestBins = [ name ]; };
    runCommand = name: _env: _script: fake name { };
    closureInfo = _: fake "closure-info" { };

    coreutils = tool "coreutils-9.7" [
      "cat"
      "ls"
      "mkdir"
    ];
    findutils = tool "findutils-4.10.0" [ "find" ];
    gnugrep = tool "gnugrep-3.12" [ "grep" ];
    gnused = tool "gnused-4.9" [ "sed" ];
    systemd = tool "systemd-257.6" [
      "systemctl"
      "systemd-run"
    ];
    bash = tool "bash-5.2p37" [
      "bash"
      "sh"
    ];
    pkgsStatic.bash = tool "bash-static-x86_64-unknown-linux-musl-5.2p37" [
      "bash"
      "sh"
    ];
    bashInteractive = tool "bash-interactive-5.2p37" [
      "bash"
      "sh"
    ];
    nix = tool "nix-2.28.4" [
      "nix"
      "nix-build"
      "nix-daemon"
      "nix-instantiate"
      "nix-shell"
      "nix-store"
    ];
    nsjail = tool "nsjail-3.4" [ "nsjail" ];
    util-linux = tool "util-linux-2.41" [
      "mount"
      "umount"
    ];
    docker = tool "docker-28.3.3" [
      "docker"
      "dockerd"
    ];
    python3 = tool "python3-3.13.5" [ "python3" ];

    python3Packages =
      lib.genAttrs [
        "setuptools"
        "falcon"
        "waitress"
        "pydantic"
        "sdnotify"
        "docker"
        "prometheus-client"
        "pydbus"
        "pygobject3"
        "pytestCheckHook"
        "hypothesis"
        "requests"
      ] (name: fake "python3.13-${name}" { })
      // {
        buildPythonApplication =
          attrs:
          tool "${attrs.pname}-${attrs.version}" [ attrs.meta.mainProgram ]
          // {
            inherit (attrs) meta;
          };
      };

    dockerTools = {
      fakeNss = fake "fake-nss" { };
      streamLayeredImage =
        attrs:
        fake "stream-${attrs.name}" {
          imageName = attrs.name;
          # nixpkgs derives the tag from the image's contents when none is given.
          imageTag = if attrs.tag or null == null then hashOf "image-${attrs.name}" else attrs.tag;
          nixjailTestImage = {
            inherit (attrs) name;
            includeNixDB = attrs.includeNixDB or false;
          };
        };
    };
  };
in
lib.fix (lib.foldl' (lib.flip lib.extends) base overlays)
