{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-builder-leftovers";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
for d in /tmp /var/tmp /dev/shm; do
  head -c 20971520 /dev/zero > "$d/nixjail-hostile-@NONCE@" 2>/dev/null && echo "WROTE $d"
done
exit 1
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
