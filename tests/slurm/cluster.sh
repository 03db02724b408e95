#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the test suite.
#   tests/slurm/cluster.sh start   # installs slurm-wlm + munge if needed, starts munged/slurmctld/slurmd
#   tests/slurm/cluster.sh stop    # stops them by pid
#   tests/slurm/cluster.sh env     # prints the exports a client needs (SLURM_CONF, PATH with our sacct)
#   tests/slurm/cluster.sh status  # exits 0 when both daemons run and the node takes jobs (installs nothing)
# State lives in $L2C_SLURM_DIR (default /tmp/l2c-slurm). Without slurmdbd there is no `sacct`;
# tests/slurm/bin/sacct answers submitit's queries from slurmctld's job table instead
# (MinJobAge keeps finished jobs there for an hour), so a hard-killed job is seen as failed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${L2C_SLURM_DIR:-/tmp/l2c-slurm}"
CONF="$DIR/slurm.conf"

install_if_needed() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    echo "installing slurm-wlm and munge (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
  fi
}

write_conf() {
  mkdir -p "$DIR"/{state,spool,log,run,munge}
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$CONF" <<CONF
ClusterName=l2ctest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  mkdir -p /etc/munge /var/run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chmod 400 /etc/munge/munge.key
  chown -R root:root /etc/munge /var/run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  munged --force
}

wait_idle() {
  for _ in $(seq 1 60); do
    state=$(SLURM_CONF="$CONF" sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
    case "$state" in idle|mixed|allocated) return 0 ;; esac
    sleep 0.5
  done
  echo "SLURM node did not become idle (state: ${state:-none}); logs in $DIR/log" >&2
  return 1
}

case "${1:-}" in
  start)
    install_if_needed
    write_conf
    start_munge
    export SLURM_CONF="$CONF"
    [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null || slurmctld -c -f "$CONF"
    [ -f "$DIR/run/slurmd.pid" ] && kill -0 "$(cat "$DIR/run/slurmd.pid")" 2>/dev/null || slurmd -c -f "$CONF"
    wait_idle
    SLURM_CONF="$CONF" scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    echo "SLURM up: SLURM_CONF=$CONF" >&2
    ;;
  stop)
    for name in slurmd slurmctld; do
      pidfile="$DIR/run/$name.pid"
      if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    done
    ;;
  status)
    for name in slurmctld slurmd; do
      pidfile="$DIR/run/$name.pid"
      [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "$name is not running" >&2; exit 1; }
    done
    command -v sinfo >/dev/null || { echo "sinfo is not installed" >&2; exit 1; }
    state=$(SLURM_CONF="$CONF" sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
    case "$state" in idle|mixed|allocated) exit 0 ;; esac
    echo "the SLURM node is ${state:-not answering}" >&2
    exit 1
    ;;
  env)
    echo "export SLURM_CONF=$CONF"
    echo "export PATH=$HERE/bin:\$PATH"
    ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
