{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-cache-poisoning";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
for f in $(find / -path /proc -prune -o -name '*nixjail-env.sh' -print 2>/dev/null); do
  echo 'echo POISONED' >> "$f" 2>/dev/null && echo "POISONED $f"
done
for d in @STATE_DIR@/gcroots/environments @STATE_DIR@/gcroots/running @RUN_DIR@/builds; do
  for r in "$d"/*; do ln -sfn "$out" "$r" 2>/dev/null && echo "POISONED $r"; done
  : > "$d/poison" 2>/dev/null && echo "POISONED $d"
done
echo checked

mkdir -p "$out"
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
