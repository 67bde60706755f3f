{
  description = "nixjail: runs untrusted submissions that bring their own Nix toolchain";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        nixjail = pkgs.callPackage ./nix/package.nix { };
        runner-image = pkgs.callPackage ./nix/runner-image.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nixjail;
      });

      apps = forAllSystems (
        pkgs:
        let
          nixjail = self.packages.${pkgs.stdenv.hostPlatform.system}.nixjail;
          # `nix run .#submit -- DIR`: send DIR as a submission ($NIXJAIL_API, $NIXJAIL_TOKEN).
          submit = pkgs.writeShellScript "nixjail-submit" ''
            exec ${lib.getExe nixjail} submit "$@"
          '';
        in
        {
          submit = {
            type = "app";
            program = "${submit}";
            meta.description = "Send a directory to a nixjail API as a submission";
          };
          default = {
            type = "app";
            program = lib.getExe nixjail;
            meta.description = "The nixjail command";
          };
        }
      );

      overlays.default = final: _prev: {
        nixjail = final.callPackage ./nix/package.nix { };
        nixjail-runner-image = final.callPackage ./nix/runner-image.nix { };
      };

      # The module builds nixjail with the host's own nixpkgs.
      nixosModules = {
        nixjail = ./nixos/module.nix;
        default = self.nixosModules.nixjail;
      };

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
        in
        {
          inherit (self.packages.${system}) nixjail runner-image;
          all-in-one = pkgs.testers.runNixOSTest (import ./vm-tests/all-in-one.nix { inherit self; });
          cache-and-worker = pkgs.testers.runNixOSTest (
            import ./vm-tests/cache-and-worker.nix { inherit self; }
          );
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
