{
  description = "nixjail: runs untrusted submissions that bring their own Nix toolchain";

  # The stable channel. `nix run .#submit` and `nix flake check` need Nix 2.18
  # or later with this nixpkgs (docs/operations.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f: lib.genAttrs systems (system: f (nixpkgs.legacyPackages.${system}.extend self.overlays.default));

      # The host configurations of docs/operations.md (tests/nixos evaluates
      # the same files without nixpkgs), each a NixOS system of its own.
      layouts = [
        "all-in-one"
        "api-only"
        "worker"
        "cache-builder"
        "api-with-remotes"
      ];
      layoutSystem =
        system: layout:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            (./nixos/examples + "/${layout}.nix")
            {
              nixpkgs.hostPlatform = system;
              # What any host has; nothing here is about nixjail.
              boot.loader.grub.enable = false;
              fileSystems."/".device = "/dev/disk/by-label/nixos";
              system.stateVersion = "26.05";
            }
          ];
        };
    in
    {
      # nixjail and its runner image, named as in the overlay.
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (pkgs: {
        inherit (pkgs) nixjail nixjail-runner-image;
        default = pkgs.nixjail;
      });

      apps = forAllSystems (
        pkgs:
        let
          # `nix run .#submit -- DIR`: send DIR as a submission ($NIXJAIL_API, $NIXJAIL_TOKEN).
          submit = pkgs.writeShellScript "nixjail-submit" ''
            exec ${lib.getExe pkgs.nixjail} submit "$@"
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
            program = lib.getExe pkgs.nixjail;
            meta.description = "The nixjail command";
          };
        }
      );

      # The module adds the overlay itself, so the host's own nixpkgs builds nixjail.
      nixosModules = {
        nixjail = {
          imports = [ ./nixos/module.nix ];
        };
        default = self.nixosModules.nixjail;
      };

      nixosConfigurations = lib.listToAttrs (
        map (layout: lib.nameValuePair "example-${layout}" (layoutSystem "x86_64-linux" layout)) layouts
      );

      checks = forAllSystems (
        pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          # Evaluating a layout's whole system (its toplevel's derivation), with
          # every NixOS assertion, needs no KVM and builds nothing.
          evaluated =
            layout:
            pkgs.writeText "nixjail-example-${layout}" (
              builtins.unsafeDiscardStringContext (layoutSystem system layout).config.system.build.toplevel.drvPath
            );
        in
        {
          inherit (pkgs) nixjail nixjail-runner-image;
          all-in-one = pkgs.testers.runNixOSTest (import ./vm-tests/all-in-one.nix { inherit self; });
          cache-and-worker = pkgs.testers.runNixOSTest (
            import ./vm-tests/cache-and-worker.nix { inherit self; }
          );
        }
        // lib.listToAttrs (map (layout: lib.nameValuePair "example-${layout}" (evaluated layout)) layouts)
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
