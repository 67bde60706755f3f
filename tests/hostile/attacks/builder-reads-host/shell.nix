{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-builder-reads-host";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
n=$(ls /proc | grep -c '^[0-9]')
[ "$n" -gt 20 ] && echo "SEEN $n processes"
for f in @STATE_DIR@ @RUN_DIR@ /root /var/lib/docker /var/lib/nixjail; do
  ls "$f" >/dev/null 2>&1 && echo "SEEN $f"
done
(exec 3<>/dev/tcp/127.0.0.1/@API_PORT@) 2>/dev/null && echo "SEEN the API's port"
echo checked
exit 1
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
