#!/usr/bin/env bash
# Bring up a one-machine Slurm (munge + slurmctld + slurmd) for CI, and prove it runs jobs.
#
#   sudo .ci/slurm.sh          # as root; no stdin needed; safe to run again
#
# Made for a fresh Debian 12 machine or container: no systemd as init, no cgroups needed
# (proctrack/linuxproc, task/none). Installs Debian's slurm-wlm and munge if missing, creates a
# munge key, writes /etc/slurm/slurm.conf for this host, starts the daemons, waits for the node
# to be idle and runs a trivial srun and sbatch job. When Slurm already answers and runs a job,
# it returns within seconds without touching anything. Exits non-zero, with the daemons' log
# tails, when Slurm cannot be started.
#
# Environment (all optional):
#   SLURM_CI_CLUSTER    cluster name                          [ci]
#   SLURM_CI_MARGIN_MB  memory kept back from Slurm, MiB      [max(1024, 10% of available)]
#   SLURM_CI_TIMEOUT    seconds to wait for the node to be idle [90]
#   SLURM_CI_FORCE=1    rewrite the configuration and restart the daemons even if Slurm answers
set -euo pipefail

CLUSTER=${SLURM_CI_CLUSTER:-ci}
TIMEOUT=${SLURM_CI_TIMEOUT:-90}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
export DEBIAN_FRONTEND=noninteractive

log() { echo "[slurm.sh] $*"; }

die() {
    echo "[slurm.sh] ERROR: $*" >&2
    for f in /var/log/munge/munged.log "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        if [[ -s $f ]]; then
            echo "---- last lines of $f ----" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
    exit 1
}

# A job that really runs: srun for the interactive path, sbatch --wait for the batch path
# (dask-jobqueue submits with sbatch). Both bounded so a wedged Slurm cannot hang CI.
job_runs() {
    local out
    out=$(timeout 60 srun --quiet -N1 -n1 -t 1 --mem=64 hostname 2>&1) || {
        log "srun failed: $out"
        return 1
    }
    # shellcheck disable=SC2016  # $SLURM_JOB_ID is for the job's shell, not ours
    out=$(cd /tmp && timeout 60 sbatch --parsable --wait -N1 -n1 -t 1 --mem=64 \
        -o /dev/null --wrap 'test -n "$SLURM_JOB_ID"' 2>&1) || {
        log "sbatch failed: $out"
        return 1
    }
    return 0
}

node_states() { sinfo -h -N -o '%t' 2>/dev/null | sort -u | tr '\n' ' '; }

slurm_answers() {
    command -v sinfo >/dev/null 2>&1 || return 1
    timeout 10 scontrol ping 2>/dev/null | grep -q 'UP' || return 1
    [[ $(node_states) =~ (idle|mix|alloc) ]] || return 1
}

# ---------------------------------------------------------------- fast path: already running
# A node already running jobs (mix/alloc) is proof enough; an idle one must run a test job.
if [[ ${SLURM_CI_FORCE:-0} != 1 ]] && slurm_answers \
    && { [[ $(node_states) =~ (mix|alloc) ]] || job_runs; }; then
    log "Slurm already running: $(sinfo -h -N -o '%N %t %c CPUs %m MB')"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sinfo >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurm-wlm munge procps >/dev/null || die "apt-get install slurm-wlm munge failed"
fi

# Under systemd the package may have started (or failed to start) its own units; use them.
USE_SYSTEMD=0
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    USE_SYSTEMD=1
fi

# ---------------------------------------------------------------- host name must resolve
HOST=$(hostname -s)
[[ -n $HOST ]] || die "hostname -s is empty"
if ! getent hosts "$HOST" >/dev/null; then
    log "$HOST does not resolve; adding it to /etc/hosts as 127.0.0.1"
    echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# ---------------------------------------------------------------- munge
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_works; then
    log "starting munged"
    if [[ $USE_SYSTEMD == 1 ]]; then
        systemctl restart munge || true
    else
        rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged --force || true
    fi
    for _ in $(seq 20); do munge_works && break; sleep 0.5; done
    munge_works || die "munged does not answer (munge -n | unmunge fails)"
fi

# ---------------------------------------------------------------- slurm.conf
# Node topology from slurmd -C when it agrees with nproc (a cpuset can hide CPUs from us);
# otherwise the plain CPU count. Memory: what is available now, less a margin, so the node is
# never configured with more than it has (that would drain it).
NPROC=$(nproc)
TOPO=$(slurmd -C 2>/dev/null | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*' || true)
if [[ $TOPO != "CPUs=$NPROC "* ]]; then
    TOPO="CPUs=$NPROC"
fi
AVAIL_MB=$(free -m | awk '/^Mem:/ {print ($7 ? $7 : $4)}')
MARGIN_MB=${SLURM_CI_MARGIN_MB:-$((AVAIL_MB / 10 > 1024 ? AVAIL_MB / 10 : 1024))}
REAL_MB=$((AVAIL_MB - MARGIN_MB))
((REAL_MB >= 1024)) || die "only ${AVAIL_MB} MiB available; need at least $((MARGIN_MB + 1024))"
# Jobs that ask for no memory get a fair share per CPU, not the whole node.
DEF_MEM=$((REAL_MB / NPROC / 2))
((DEF_MEM <= 2048)) || DEF_MEM=2048

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Written by .ci/slurm.sh for one machine ($HOST); rewritten on each run that (re)starts Slurm.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
# Take the node as configured even where detection in a container disagrees.
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
MessageTimeout=20

NodeName=$HOST NodeAddr=127.0.0.1 $TOPO RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
install -m 0644 "$NEW_CONF" "$CONF"
rm -f "$NEW_CONF"
log "wrote $CONF: $HOST $TOPO RealMemory=$REAL_MB DefMemPerCPU=$DEF_MEM"

# ---------------------------------------------------------------- daemons
stop_pidfile() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

if [[ $USE_SYSTEMD == 1 ]]; then
    systemctl restart slurmctld || die "systemctl restart slurmctld failed"
    systemctl restart slurmd || die "systemctl restart slurmd failed"
else
    stop_pidfile /run/slurmd.pid
    stop_pidfile /run/slurmctld.pid
    log "starting slurmctld and slurmd"
    slurmctld -i || die "slurmctld did not start"
    up=0
    started=$SECONDS
    while ((SECONDS < started + 30)); do
        if timeout 5 scontrol ping 2>/dev/null | grep -q UP; then up=1; break; fi
        # Gone (a port in use, a bad slurm.conf): say so now rather than after 30 s.
        pid=$(cat /run/slurmctld.pid 2>/dev/null || true)
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then die "slurmctld exited at start"; fi
        if [[ -z $pid ]] && ((SECONDS > started + 5)); then die "slurmctld wrote no pid file"; fi
        sleep 1
    done
    ((up)) || die "slurmctld does not answer scontrol ping after 30 s"
    slurmd || die "slurmd did not start"
fi

# ---------------------------------------------------------------- wait for an idle node
deadline=$((SECONDS + TIMEOUT))
state=""
while ((SECONDS < deadline)); do
    state=$(node_states)
    case $state in
    *idle* | *mix* | *alloc*) break ;;
    *down* | *drain* | *drng*) # e.g. "unexpectedly rebooted" left from an earlier run
        scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
[[ $state =~ (idle|mix|alloc) ]] || die "node $HOST not idle after ${TIMEOUT}s (state: '$state'; $(sinfo -h -R 2>/dev/null))"

job_runs || die "Slurm is up but a trivial job does not run"
log "Slurm ready: $(sinfo -h -N -o '%N %t %c CPUs %m MB')"
