a=x; while :; do a=$a$a; done
