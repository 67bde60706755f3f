# Through sh, so the program does not depend on /bin/sh in the sandbox.
sh ./hello
