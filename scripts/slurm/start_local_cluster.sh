#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (no systemd): munged, slurmctld, slurmd.
#
#   sudo bash scripts/slurm/start_local_cluster.sh          # as root; idempotent
#   source "${PVLLM_SLURM_DIR:-/tmp/pvllm-slurm}/env.sh"    # sets SLURM_CONF and PATH (sacct stand-in)
#   sinfo; sbatch --wrap 'hostname'
#   bash scripts/slurm/stop_local_cluster.sh                # stops the daemons started here
#
# Used by .ci/run before the test suite and by the `slurm` tests (docs/cluster.md).
# Settings through the environment:
#   PVLLM_SLURM_DIR   state dir holding slurm.conf, logs, spool, pid files, env.sh (default /tmp/pvllm-slurm)
#   PVLLM_SLURM_CPUS  CPUs the node offers (default: nproc)
set -euo pipefail

STATE_DIR="${PVLLM_SLURM_DIR:-/tmp/pvllm-slurm}"
CPUS="${PVLLM_SLURM_CPUS:-$(nproc)}"
CONF="$STATE_DIR/slurm.conf"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[slurm] $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (installs packages, starts munged as user munge, slurmd needs root)"
  exit 1
fi

# 1. Packages: Debian's slurm-wlm pieces + munge. Skip apt entirely when already installed.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
  || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$STATE_DIR"/{bin,log,spool/ctld,spool/d,run}

# 2. munge: the package creates /etc/munge/munge.key; without systemd nobody starts the daemon.
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  /usr/sbin/mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge
chown munge:munge /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { log "munged does not answer"; exit 1; }
fi

# 3. slurm.conf: one node, one default partition, no accounting (the sacct stand-in below covers submitit).
HOST="$(hostname -s 2>/dev/null || uname -n)"
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$((MEM_MB > 4096 ? MEM_MB - 2048 : MEM_MB / 2))
cat >"$CONF" <<EOF
# Written by scripts/slurm/start_local_cluster.sh: a one-node cluster for tests and demos.
ClusterName=pvllm
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job may start again after ~7 s instead of ~160 s.
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Schedule right away (the defaults batch submissions for seconds; tests wait on every job).
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
# Keep finished jobs visible to squeue for an hour: the sacct stand-in reads their final state there.
MinJobAge=3600
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# A requeued or cancelled job gets SIGKILL this many seconds after SIGTERM (submitit and Lightning ignore SIGTERM).
KillWait=5
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# 4. sacct stand-in: submitit polls `sacct`; without accounting it fails and submitit hangs forever on a
#    job that dies hard. This answers from squeue (finished jobs stay there for MinJobAge).
install -m 755 "$HERE/sacct_standin.sh" "$STATE_DIR/bin/sacct"

cat >"$STATE_DIR/env.sh" <<EOF
# Source this to use the local cluster (written by scripts/slurm/start_local_cluster.sh).
export SLURM_CONF=$CONF
export PATH=$STATE_DIR/bin:\$PATH
EOF
export SLURM_CONF="$CONF"
export PATH="$STATE_DIR/bin:$PATH"

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# 5. Daemons (both daemonize). A running controller re-reads the freshly written conf.
if alive "$STATE_DIR/run/slurmctld.pid"; then
  scontrol reconfigure >/dev/null 2>&1 || true
else
  log "starting slurmctld"
  slurmctld -f "$CONF"
fi
if ! alive "$STATE_DIR/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd -f "$CONF"
fi

# 6. Wait until the node is idle (or already running jobs: mixed/allocated).
state=""
for _ in $(seq 120); do
  state="$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true)"
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | *fail*)
      scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle | mixed | allocated) ;;
  *)
    log "node $HOST not ready (state '${state:-none}'); logs in $STATE_DIR/log"
    tail -n 20 "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log" >&2 || true
    exit 1 ;;
esac

log "node $HOST is $state ($CPUS CPUs). Use:"
echo "export SLURM_CONF=$CONF"
echo "export PATH=$STATE_DIR/bin:\$PATH"
echo "# or: source $STATE_DIR/env.sh"
