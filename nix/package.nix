# The nixjail Python package: the `nixjail` command and, in lib/systemd/system
# and lib/sysusers.d, the units every host runs (rendered from nixos/units/).
{
  lib,
  python3Packages,
  nix,
  nsjail,
}:

let
  pyproject = lib.importTOML ../pyproject.toml;
in
python3Packages.buildPythonApplication {
  pname = "nixjail";
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../src
      ../nixos/units
      # The tests the package runs (below).
      ../tests/test_spool.py
      ../tests/test_leasing.py
      ../tests/test_systemd.py
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = with python3Packages; [
    falcon
    waitress
    pydantic
    sdnotify
    docker
    prometheus-client
    # The D-Bus question `nixjail expire-leases` asks systemd (nixjail.holders).
    pydbus
    pygobject3
  ];

  # Most of the test suite needs dockerd, a nix-daemon and nsjail; the flake's
  # VM tests (vm-tests/) run those parts on NixOS. These need none of them:
  # the spool, leasing and nixjail's systemd protocols (sd_notify, LISTEN_FDS).
  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    hypothesis
    requests
  ];
  enabledTestPaths = [
    "tests/test_spool.py"
    "tests/test_leasing.py"
    "tests/test_systemd.py"
  ];
  pythonImportsCheck = [
    "nixjail.cli.main"
    "nixjail.api.app"
    "nixjail.holders"
    # Imported only when lease expiry asks systemd over D-Bus: checked here.
    "pydbus"
    "gi.repository.GLib"
  ];

  # The host's nix (earlier on a NixOS unit's PATH) wins; these are the fallback.
  makeWrapperArgs = [
    "--suffix"
    "PATH"
    ":"
    (lib.makeBinPath [
      nix
      nsjail
    ])
  ];

  # The unit templates have one placeholder, @nixjail@, the command
  # (tests/systemd renders them the same way for the tests that run them).
  postInstall = ''
    for template in nixos/units/*.in; do
      name=$(basename "$template" .in)
      case $name in
        *.sysusers) target=$out/lib/sysusers.d/''${name%.sysusers}.conf ;;
        *.tmpfiles) target=$out/lib/tmpfiles.d/''${name%.tmpfiles}.conf ;;
        *) target=$out/lib/systemd/system/$name ;;
      esac
      mkdir -p "$(dirname "$target")"
      substitute "$template" "$target" --subst-var-by nixjail "$out/bin/nixjail"
    done
    if grep -rnE '@[A-Za-z_][A-Za-z0-9_]*@' $out/lib/systemd/system $out/lib/sysusers.d $out/lib/tmpfiles.d; then
      echo "unit templates have placeholders this package does not fill" >&2
      exit 1
    fi
  '';

  meta = {
    description = "Runs untrusted submissions that bring their own Nix toolchain";
    license = lib.licenses.mit;
    mainProgram = "nixjail";
    platforms = lib.platforms.linux;
  };
}
