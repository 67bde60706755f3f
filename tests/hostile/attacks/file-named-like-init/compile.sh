echo own compile.sh
