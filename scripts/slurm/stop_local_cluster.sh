#!/usr/bin/env bash
# Stop the one-node cluster started by start_local_cluster.sh: cancel its jobs, stop slurmd, slurmctld
# and (with --munge) munged. Only the processes named in the state dir's pid files are signalled.
#
#   bash scripts/slurm/stop_local_cluster.sh [--munge] [--purge]   # --purge also deletes the state dir
set -uo pipefail

STATE_DIR="${PVLLM_SLURM_DIR:-/tmp/pvllm-slurm}"
STOP_MUNGE=0
PURGE=0
for a in "$@"; do
  case "$a" in
    --munge) STOP_MUNGE=1 ;;
    --purge) PURGE=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

stop_pidfile() {
  local f="$1" name="$2" pid
  [[ -s "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm] stopping $name ($pid)" >&2
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$f"
}

if [[ -f "$STATE_DIR/slurm.conf" ]] && command -v scancel >/dev/null; then
  SLURM_CONF="$STATE_DIR/slurm.conf" scancel --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop_pidfile "$STATE_DIR/run/slurmd.pid" slurmd
stop_pidfile "$STATE_DIR/run/slurmctld.pid" slurmctld
if [[ $STOP_MUNGE -eq 1 ]]; then
  stop_pidfile /run/munge/munged.pid munged
fi
if [[ $PURGE -eq 1 ]]; then
  rm -rf "$STATE_DIR"
fi
exit 0
