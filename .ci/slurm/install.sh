#!/usr/bin/env bash
# Install a single-node SLURM (controller + compute daemon + client) and MUNGE.
# Idempotent, non-interactive, quiet. Run as root (or with passwordless sudo).
# Usage: bash .ci/slurm/install.sh
set -euo pipefail

# (sinfo --version needs a slurm.conf in 22.05, so ask dpkg instead)
slurm_version() { dpkg-query -W -f='slurmd ${Version}' slurmd 2>/dev/null || echo "slurm (version unknown)"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

need=()
for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ "${#need[@]}" -eq 0 ]; then
    echo "install.sh: SLURM and MUNGE already installed ($(slurm_version))"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts try to start services (there may be no init system).
policy_created=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
fi
cleanup() { if [ "$policy_created" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

echo "install.sh: installing munge slurmctld slurmd slurm-client (missing: ${need[*]})"
log=$(mktemp /tmp/hpcmix-slurm-install.XXXXXX.log)
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends \
           -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
           munge slurmctld slurmd slurm-client; } </dev/null >"$log" 2>&1; then
    echo "install.sh: apt-get failed; its output:" >&2
    cat "$log" >&2
    exit 1
fi
rm -f "$log"
echo "install.sh: done ($(slurm_version))"
