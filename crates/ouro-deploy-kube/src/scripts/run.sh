# The main container's entry point (PID 1). A shell as PID 1 ignores SIGTERM, so the service's
# command runs in its own session and this script passes the kubelet's SIGTERM on to that whole
# process group as the service's stop signal, then exits with the service's status.
# A background command starts with SIGINT and SIGQUIT ignored (and a shell cannot trap a signal
# ignored at entry), so `env --default-signal` restores them where coreutils has it.
child=""
stop=""
forward() {
  signalled=1
  if [ -n "$child" ]; then
    kill -s "$OURO_STOP_SIGNAL" -- "-$child" 2>/dev/null || kill -s "$OURO_STOP_SIGNAL" "$child" 2>/dev/null
  else
    # Stopped while the command was being started: pass it on once its pid is known.
    stop=1
  fi
}
trap forward TERM INT
reset=""
if env --default-signal true >/dev/null 2>&1; then reset="env --default-signal"; fi
if command -v setsid >/dev/null 2>&1; then
  setsid $reset sh -c "$OURO_RUN" &
else
  $reset sh -c "$OURO_RUN" &
fi
child=$!
if [ -n "$stop" ]; then forward; fi
while :; do
  signalled=""
  wait "$child"
  code=$?
  # A trapped signal ends `wait` early (status 128+n); the service's own status comes from the
  # next `wait`.
  if [ -z "$signalled" ]; then exit "$code"; fi
done
