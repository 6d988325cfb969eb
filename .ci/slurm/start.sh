#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (for tests and CI).
#
#   bash .ci/slurm/install.sh && bash .ci/slurm/start.sh
#
# Writes /etc/slurm/slurm.conf and /etc/slurm/gres.conf, starts munged (as
# user munge), slurmctld and slurmd, and waits until `sinfo` reports the node
# idle. Idempotent: if the daemons already run with the same configuration and
# the node is up, it does nothing; if the configuration changed, it restarts
# the SLURM daemons. Needs root. No systemd needed.
#
# Partitions:  debug (default), gpu (same node; jobs ask --gres=gpu:1),
#              down  (State=DOWN: jobs queue but never start; for timeout tests)
# The node advertises one stand-in GPU (gres.conf File=/dev/null), so
# `--gres=gpu:1` is scheduled and accounted for by SLURM but there is no device.
#
# Environment knobs:
#   HPCMIX_SLURM_START_TIMEOUT  seconds to wait for the node to be idle (60)
#   HPCMIX_SLURM_DEF_MEM_PER_CPU  MB given to jobs that do not ask (256)
#   HPCMIX_SLURM_MIN_CPUS / HPCMIX_SLURM_MIN_MEMORY_MB  declare at least this
#       much on the node even on a smaller machine (2 / 4096)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "start.sh: must run as root (it writes /etc/slurm and starts daemons)" >&2
    exit 2
fi
for cmd in munged slurmctld slurmd sinfo scontrol; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "start.sh: $cmd not found; run .ci/slurm/install.sh first" >&2
        exit 2
    fi
done

TIMEOUT="${HPCMIX_SLURM_START_TIMEOUT:-60}"
DEF_MEM_PER_CPU="${HPCMIX_SLURM_DEF_MEM_PER_CPU:-256}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
HOST="$(hostname -s)"

log() { echo "start.sh: $*"; }

dump_logs() {
    {
        for f in /var/log/munge/munged.log "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
            echo "----- tail of $f -----"
            tail -n 40 "$f" 2>/dev/null || echo "(missing)"
        done
        echo "----- sinfo / scontrol show node -----"
        timeout 10 sinfo -N -l 2>&1 || true
        timeout 10 scontrol show node "$HOST" 2>&1 || true
    } >&2
}

fail() {
    echo "start.sh: ERROR: $*" >&2
    dump_logs
    exit 1
}

# ---------------------------------------------------------------- munge ----
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0700 /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --force --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key

if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged"
    # stale socket/pid from a dead munged makes it refuse to start
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged </dev/null || fail "munged did not start"
    for _ in $(seq 1 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge credential round-trip failed"
fi

# ---------------------------------------------------------------- config ---
# Node hardware as slurmd sees it, e.g.
#   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
NODE_HW="$(slurmd -C </dev/null | head -n 1)"
case "$NODE_HW" in
    NodeName=*) ;;
    *) fail "unexpected 'slurmd -C' output: $NODE_HW" ;;
esac
# Use our short host name (slurmd -C may print the FQDN).
NODE_HW="NodeName=$HOST ${NODE_HW#NodeName=* }"
# The test site runs a CPU-pool job and a GPU-pool job side by side (1 core,
# ~1 GB each). On a smaller machine declare a bit more than there is
# (SlurmdParameters=config_overrides lets slurmd accept that; nothing is
# enforced without cgroups), so the tests still fit.
MIN_CPUS="${HPCMIX_SLURM_MIN_CPUS:-2}"
MIN_MEM_MB="${HPCMIX_SLURM_MIN_MEMORY_MB:-4096}"
hw_cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_HW")"
hw_mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_HW")"
if [ -n "$hw_cpus" ] && [ "$hw_cpus" -lt "$MIN_CPUS" ]; then
    log "machine has $hw_cpus CPU(s); declaring $MIN_CPUS"
    NODE_HW="NodeName=$HOST CPUs=$MIN_CPUS RealMemory=${hw_mem:-$MIN_MEM_MB}"
fi
if [ -n "$hw_mem" ] && [ "$hw_mem" -lt "$MIN_MEM_MB" ]; then
    log "machine has $hw_mem MB; declaring RealMemory=$MIN_MEM_MB"
    NODE_HW="${NODE_HW/RealMemory=$hw_mem/RealMemory=$MIN_MEM_MB}"
fi

mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
chown slurm:slurm "$LOG_DIR" "$STATE_DIR"
chmod 0755 "$LOG_DIR" "$STATE_DIR"

NEW_CONF="$(mktemp)"
NEW_GRES="$(mktemp)"
trap 'rm -f "$NEW_CONF" "$NEW_GRES"' EXIT

cat >"$NEW_CONF" <<EOF
# Written by hpcmix .ci/slurm/start.sh -- single-node test cluster. Do not edit.
ClusterName=hpcmix-ci
SlurmctldHost=$HOST(127.0.0.1)
# slurmctld drops privileges to this user; slurmd always runs as root.
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# node config here wins over what slurmd detects (CI machines vary)
SlurmdParameters=config_overrides
# short timers so a test suite does not wait on them
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
MessageTimeout=10
# Scheduling: share the node's cores and memory between jobs
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
# No database: accounting off. The GRES a job holds still shows in
# 'scontrol show job -d <id>' while it lives (JOB_GRES=gpu:1 and the per-node
# line "Nodes=... GRES=gpu:1(IDX:0)"). AccountingStorageTRES=gres/gpu (which
# would add gres/gpu=1 to TRES=) needs slurmdbd, so it is not set here.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# One stand-in GPU (see gres.conf)
GresTypes=gpu
$NODE_HW NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
PartitionName=down Nodes=$HOST Default=NO MaxTime=INFINITE State=DOWN
EOF

cat >"$NEW_GRES" <<EOF
# Written by hpcmix .ci/slurm/start.sh: a stand-in GPU with no device behind it
NodeName=$HOST Name=gpu File=/dev/null
EOF

changed=0
for pair in "$NEW_CONF:$CONF_DIR/slurm.conf" "$NEW_GRES:$CONF_DIR/gres.conf"; do
    src="${pair%%:*}"; dst="${pair#*:}"
    if ! cmp -s "$src" "$dst"; then
        install -m 0644 "$src" "$dst"
        changed=1
    fi
done

# ---------------------------------------------------------------- daemons --
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {  # stop_daemon NAME PIDFILE
    local pidf="$2" pid
    if pid_alive "$pidf"; then
        pid="$(cat "$pidf")"
        log "stopping $1 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

if [ "$changed" -eq 1 ]; then
    log "configuration written to $CONF_DIR/slurm.conf and $CONF_DIR/gres.conf"
    stop_daemon slurmd /run/slurmd.pid
    stop_daemon slurmctld /run/slurmctld.pid
fi

if pid_alive /run/slurmctld.pid; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    # -c: start from a clean state (no jobs/reservations from an earlier run)
    slurmctld -c </dev/null || fail "slurmctld failed to start"
fi

if pid_alive /run/slurmd.pid; then
    log "slurmd already running"
else
    log "starting slurmd"
    slurmd -N "$HOST" </dev/null || fail "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait -----
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    state="$(timeout 10 sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
    esac
    # A node left down/drained by an earlier run: bring it back.
    case "$state" in
        down*|drain*|drained*|fail*)
            timeout 10 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    pid_alive /run/slurmctld.pid || fail "slurmctld exited"
    pid_alive /run/slurmd.pid || fail "slurmd exited"
    if [ "$(date +%s)" -ge "$deadline" ]; then
        fail "node $HOST not idle after ${TIMEOUT}s (sinfo state: '${state:-no answer}')"
    fi
    sleep 0.5
done

log "SLURM is up: node $HOST is $state"
sinfo
