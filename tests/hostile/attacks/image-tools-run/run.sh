for p in /usr/bin/python3 /usr/bin/perl /usr/bin/nix /usr/bin/nix-build /usr/bin/nix-daemon \
         /usr/local/bin/nsjail /usr/bin/bash /usr/lib/python3 /usr/lib /lib /lib64; do
  if [ -e "$p" ]; then echo "SEEN $p"; fi
done
for tool in python3 perl nix nix-build nix-daemon nsjail; do
  if type -P "$tool" >/dev/null; then echo "SEEN $tool"; fi
done
# /bin/bash, /bin/sh and /usr/bin/env are nixjail's: a static bash (no loader to find)
# and an env script that runs a command.
for p in /bin/bash /bin/sh /usr/bin/env; do [ -x "$p" ] || echo "MISSING $p"; done
/bin/sh -c 'echo sh works'
/usr/bin/env GREETING=hi /bin/bash -c 'echo "env works: $GREETING"'
printf '#!/usr/bin/env bash\necho shebang works\n' > /tmp/shebang && busybox chmod +x /tmp/shebang
/tmp/shebang
echo checked
