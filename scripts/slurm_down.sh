#!/usr/bin/env bash
# Stops the daemons scripts/slurm_up.sh started (the process ids it recorded), newest
# first, and nothing else.
set -uo pipefail
DIR=${LERAC_SLURM_DIR:-/tmp/lerac-slurm}
[ -f "$DIR/started" ] || exit 0
tac "$DIR/started" | while read -r name pid; do
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $name ($pid)"
  fi
done
rm -f "$DIR/started"
