#!/usr/bin/env bash
# A one-node SLURM on this machine for `make test-cluster` (slurmctld + slurmd + munge on
# localhost). Installs slurm-wlm and munge with apt when they are missing (needs root),
# writes $LERAC_SLURM_DIR/slurm.conf (default /tmp/lerac-slurm; clients find it through
# SLURM_CONF), starts the daemons that are not running, records the ids of the processes
# it started in $LERAC_SLURM_DIR/started (scripts/slurm_down.sh stops exactly those) and
# waits for the node to accept jobs. Any step that fails prints one `error:` line.
set -euo pipefail
DIR=${LERAC_SLURM_DIR:-/tmp/lerac-slurm}
fail() { echo "error: $*" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || fail "SLURM is not installed and installing it needs root: sudo apt-get install slurm-wlm munge"
  command -v apt-get >/dev/null || fail "SLURM is not installed and this machine has no apt-get: install slurm-wlm and munge"
  echo "installing slurm-wlm and munge (apt)"
  apt-get update -qq || fail "apt-get update failed (no access to the Debian registry?)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
    || fail "apt-get install slurm-wlm munge failed"
fi
[ "$(id -u)" = 0 ] || fail "starting slurmctld and slurmd here needs root"

mkdir -p "$DIR/state" "$DIR/spool"
: > "$DIR/started.new"

# munge: the key the package made; a daemon started here if none answers.
if ! munge -n </dev/null >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
  mkdir -p /run/munge && chown munge: /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  echo "munged $(cat /run/munge/munged.pid)" >> "$DIR/started.new"
fi
munge -n </dev/null | unmunge >/dev/null || fail "munge does not work (see /var/log/munge/munged.log)"

HOST=$(hostname -s)
NODE=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')
cat > "$DIR/slurm.conf" <<CONF
# Written by scripts/slurm_up.sh: one node, this machine, everything as root.
ClusterName=lerac
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# Finished jobs stay in `scontrol show job` (submit, start and end times) for an hour.
MinJobAge=3600
SchedulerParameters=sched_interval=1
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf

if ! scontrol ping 2>/dev/null | grep -q UP; then
  slurmctld -f "$SLURM_CONF" -c || fail "slurmctld did not start (see $DIR/slurmctld.log)"
  for _ in $(seq 100); do [ -s "$DIR/slurmctld.pid" ] && break; sleep 0.1; done
  echo "slurmctld $(cat "$DIR/slurmctld.pid")" >> "$DIR/started.new"
fi
if ! [ -s "$DIR/slurmd.pid" ] || ! kill -0 "$(cat "$DIR/slurmd.pid")" 2>/dev/null; then
  slurmd -f "$SLURM_CONF" || fail "slurmd did not start (see $DIR/slurmd.log)"
  for _ in $(seq 100); do [ -s "$DIR/slurmd.pid" ] && break; sleep 0.1; done
  echo "slurmd $(cat "$DIR/slurmd.pid")" >> "$DIR/started.new"
fi
cat "$DIR/started.new" >> "$DIR/started" && rm "$DIR/started.new"

for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && { echo "slurm: node $HOST idle (SLURM_CONF=$SLURM_CONF)"; exit 0; }
  sleep 1
done
fail "the SLURM node $HOST is not idle after 60 s (state '${state:-none}'; see $DIR/slurmd.log)"
