# nixjail's packages, named as the flake's `packages` name them: the flake's
# `overlays.default`, and what nixos/module.nix adds to the host's pkgs.
final: _prev: {
  nixjail = final.callPackage ./package.nix { };
  nixjail-runner-image = final.callPackage ./runner-image.nix { };
}
