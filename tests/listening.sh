# Sourced by scripts that start the server in the background with its log in a file.
#
#   ADDR=$(listening_address "$LOG") || { cat "$LOG"; echo "FAIL: ..."; exit 1; }
#
# Prints the address from the server's "listening on HOST:PORT" line once it appears
# (it binds --port 0, so the port is only known from the log); fails after 10 s.
listening_address() {
  local addr=""
  for _ in $(seq 1 200); do
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$1" | awk '{ print $3 }' || true)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    sleep 0.05
  done
  return 1
}
