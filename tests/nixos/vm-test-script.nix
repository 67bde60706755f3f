# A VM test of vm-tests/ with stand-ins for pkgs and the flake, enough to
# render its testScript and name its nodes, as nixos/lib/testing/driver.nix
# does before its type check (tests/nixos/test_vm_test_scripts.py).
{ libDir, file }:

let
  lib = import libDir;
  fake = name: attrs: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  } // attrs;
  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    hello = fake "hello-2.12.2" { };
    curl = fake "curl-8.14.1" { };
    writeText = name: _text: fake name { };
    runCommand = name: _env: _script: fake name { };
    mkShellNoCC = _: fake "nix-shell" { inputDerivation = fake "nix-shell-inputs" { }; };
  };
  self = {
    packages.x86_64-linux.nixjail-runner-image = fake "stream-nixjail-runner" {
      imageName = "nixjail-runner";
      imageTag = "0123456789abcdef";
    };
    nixosModules.default = { };
  };
  test = import file { inherit self; } { inherit pkgs lib; };
in
{
  inherit (test) name testScript;
  nodes = lib.attrNames test.nodes;
}
