#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/slurm/start.sh (slurmd, slurmctld,
# then munged). Idempotent: stopping what is not running is not an error.
# Leaves the configuration and logs in place (/etc/slurm, /var/log/slurm).
set -uo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "stop.sh: must run as root" >&2
    exit 2
fi

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local name="$1" pidf="$2" pid
    if [ -s "$pidf" ] && pid="$(cat "$pidf")" && kill -0 "$pid" 2>/dev/null; then
        echo "stop.sh: stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name did not exit in 10 s, killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    else
        echo "stop.sh: $name not running"
    fi
    rm -f "$pidf"
}

# cancel what is left so slurmd does not leave job processes behind
if command -v scancel >/dev/null 2>&1 && [ -s /run/slurmctld.pid ]; then
    timeout 10 scancel --user=root >/dev/null 2>&1 || true
fi
stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid
exit 0
