#!/usr/bin/env bash
# `sacct` stand-in for a cluster without accounting (start_local_cluster.sh puts it first on PATH).
#
# submitit runs `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]` to poll its jobs. Without
# slurmdbd the real sacct fails, and submitit then waits forever for a job that died without writing its
# result (os._exit, OOM, scancel, time limit). This prints the same table from squeue, which keeps
# finished jobs for MinJobAge: header `JobID|State|NodeList`, one row per job or array task, header only
# for unknown ids. Only the options submitit passes are understood; others are ignored.
set -uo pipefail

ids=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -j | --jobs) IFS=',' read -r -a more <<<"${2:-}"; ids+=("${more[@]}"); shift 2 ;;
    --jobs=*) IFS=',' read -r -a more <<<"${1#--jobs=}"; ids+=("${more[@]}"); shift ;;
    *) shift ;;
  esac
done

echo "JobID|State|NodeList"
[[ ${#ids[@]} -eq 0 ]] && exit 0
# Whole table once (squeue -j fails on a purged id), then keep rows whose job or array-master id matches.
squeue -h -t all -o '%i|%T|%N|%A|%F' 2>/dev/null | awk -F'|' -v want="${ids[*]}" '
  BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
  {
    master = $1; sub(/_.*/, "", master)
    if (keep[$1] || keep[master] || keep[$4] || keep[$5]) print $1 "|" $2 "|" $3
  }'
exit 0
