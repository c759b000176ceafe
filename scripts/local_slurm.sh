#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests of the SLURM launchers (tests/e2e/test_slurm.py) and
# for trying `ablate.py --launcher slurm` / `train.sh slurm` before a cluster (docs/cluster.md).
#
#   bash scripts/local_slurm.sh start    # install the Debian packages when missing, write the config, start munged,
#                                        # slurmctld and slurmd, wait until the node is idle; prints the SLURM_CONF line
#   bash scripts/local_slurm.sh status   # the daemons' pids and `sinfo`; exit status 1 when it is not running
#   bash scripts/local_slurm.sh stop     # cancel its jobs, end the daemons it started (by their pids), remove
#                                        # its folder
#
# Everything lives in one folder, LOCAL_SLURM_DIR (default ${TMPDIR:-/tmp}/yolof_local_slurm): slurm.conf, munge's own
# key and socket, slurmctld's state, slurmd's spool, the logs and the pid of every daemon started here. Nothing under
# /etc is written, and the ports (LOCAL_SLURM_PORT and the next one, default 16817) are not SLURM's usual 6817/6818,
# so a system SLURM on the same machine is left alone. Clients (sbatch, squeue, scontrol, submitit) find this cluster
# through `export SLURM_CONF=$LOCAL_SLURM_DIR/slurm.conf`; the tests read that file when SLURM_CONF is unset.
# Runs as root (slurmd starts jobs as their user; the Debian packages need installing): sudo is used otherwise.
set -euo pipefail
DIR=${LOCAL_SLURM_DIR:-${TMPDIR:-/tmp}/yolof_local_slurm}
PORT=${LOCAL_SLURM_PORT:-16817}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

install_packages() {
  local missing=()
  for cmd in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd%%:*}" ] || missing+=("${cmd##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "local_slurm: installing ${missing[*]}"
  apt-cache show slurmd >/dev/null 2>&1 || $SUDO apt-get update -q >"$DIR/apt.log" 2>&1 || true  # a fresh image
  for _ in 1 2 3 4 5 6; do  # another apt-get may hold the lock for a while
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd munge \
      slurm-client >>"$DIR/apt.log" 2>&1 && return
    sleep 10
  done
  echo "local_slurm: apt-get install failed, see $DIR/apt.log" >&2
  tail -3 "$DIR/apt.log" >&2
  false
}

write_config() {
  local node
  node=$(/usr/sbin/slurmd -C | head -1)  # this machine as slurmd sees it: NodeName=host CPUs=... RealMemory=...
  $SUDO tee "$CONF" >/dev/null <<EOF
# written by scripts/local_slurm.sh: a one-node cluster on this machine, state under $DIR
ClusterName=yolof_local
SlurmctldHost=$(hostname -s)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemon() {  # name, command...: started in the foreground of its own session, its pid kept
  local name=$1; shift
  $SUDO setsid "$@" </dev/null >>"$DIR/$name.out" 2>&1 &
  echo $! | $SUDO tee "$DIR/$name.pid" >/dev/null
}

start() {
  if alive slurmctld && alive slurmd && alive munged; then
    echo "local_slurm: already running; export SLURM_CONF=$CONF"; return
  fi
  [ -d "$DIR" ] && stop_daemons quiet
  trap 'stop_daemons quiet' ERR  # a failed start leaves nothing running
  $SUDO rm -rf "$DIR"
  $SUDO mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
  $SUDO chmod 755 "$DIR"
  install_packages
  # munged runs as the munge user (setpriv execs it: the pid kept is munged's) with a key of its own, its socket here
  $SUDO chown munge: "$DIR/munge"
  $SUDO chmod 755 "$DIR/munge"  # its socket must be reachable by every user; the key stays 0600
  $SUDO runuser -u munge -- /usr/sbin/mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null
  start_daemon munged setpriv --reuid=munge --regid=munge --clear-groups /usr/sbin/munged --foreground \
    --socket="$DIR/munge/munge.socket" \
    --key-file="$DIR/munge/munge.key" --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed"
  for _ in $(seq 50); do [ -S "$DIR/munge/munge.socket" ] && break; sleep 0.1; done
  [ -S "$DIR/munge/munge.socket" ] || { echo "local_slurm: munged did not start, see $DIR/munged.out" >&2; false; }
  write_config
  start_daemon slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
  start_daemon slurmd /usr/sbin/slurmd -D -f "$CONF"
  local state=
  for _ in $(seq 120); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    alive slurmctld && alive slurmd || break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    echo "local_slurm: the node is '${state:-unreachable}', not idle; logs: $DIR/slurmctld.log $DIR/slurmd.log" >&2
    tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    false
  fi
  trap - ERR
  echo "local_slurm: node $(sinfo -h -N -o "%N (%c CPUs, %m MB)") idle; export SLURM_CONF=$CONF"
}

stop_daemons() {  # the daemons this script started, by the pids it wrote; slurmd last ends its jobs' steps
  for name in slurmd slurmctld munged; do
    if alive "$name"; then
      local pid; pid=$(cat "$DIR/$name.pid")
      $SUDO kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && $SUDO kill -KILL "$pid" 2>/dev/null || true
      [ "${1:-}" = quiet ] || echo "local_slurm: stopped $name (pid $pid)"
    fi
    $SUDO rm -f "$DIR/$name.pid"
  done
}

stop() {
  [ -d "$DIR" ] || { echo "local_slurm: not running (no $DIR)"; return; }
  if alive slurmctld; then  # the jobs first: their processes are slurmd's (slurmstepd), not ours to kill by pid
    scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break; sleep 0.2
    done
  fi
  stop_daemons
  $SUDO rm -rf "$DIR"
}

status() {
  local ok=0
  for name in munged slurmctld slurmd; do
    if alive "$name"; then echo "$name: pid $(cat "$DIR/$name.pid")"; else echo "$name: not running"; ok=1; fi
  done
  [ $ok = 0 ] && { sinfo; echo "export SLURM_CONF=$CONF"; }
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
