#!/usr/bin/env bash
# Starts the one-node SLURM cluster that tests/test_slurm.py submits to, on this machine: as
# root, with no systemd. It installs Debian's munge and slurm-wlm when they are missing (apt),
# writes /etc/slurm/slurm.conf, gres.conf and a munge key, and starts munged, slurmctld and
# slurmd as plain daemons; stop them by the pids in /run/*.pid. Idempotent enough for CI.
# See tests/slurm/README.md. The node advertises GPUS (default 1) GPUs as a GRES with no
# device behind it, so jobs that request a GPU are placed and serialised as on a GPU node.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "tests/slurm/up.sh: needs root (it installs packages and starts daemons)" >&2; exit 3; }
command -v apt-get >/dev/null || command -v slurmctld >/dev/null || { echo "tests/slurm/up.sh: needs Debian's apt-get or an installed SLURM" >&2; exit 3; }
command -v slurmctld >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurm-wlm >/dev/null; }
H=$(hostname -s); CPUS=$(nproc); MEM=$(( $(free -m | awk '/Mem:/{print $2}') - 2048 )); GPUS=${GPUS:-1}
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge; chmod 400 /etc/munge/munge.key
rm -f /etc/slurm/cgroup.conf
printf 'AutoDetect=off\nNodeName=%s Name=gpu File=/dev/null Count=%s\n' "$H" "$GPUS" > /etc/slurm/gres.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName=$H CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x munged >/dev/null || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
sleep 2
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for i in $(seq 30); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo
