#!/usr/bin/env bash
# Three test "hosts" on this machine for tests/training/test_cluster_ssh.py: network namespaces mtx-h1..mtx-h3, each
# joined by a veth pair to the bridge mtxbr0 (10.213.7.1, this machine's side), each running Debian's sshd on
# its own address 10.213.7.2..4. They share this machine's files, so the project is at the same path on all.
#
#   tests/cluster/netns.sh up STATE_DIR    # root; keys and sshd configs go into STATE_DIR
#   tests/cluster/netns.sh down [STATE_DIR] # stops the sshds, every process in the namespaces, removes all
#
# `up` writes STATE_DIR/ssh_config (ssh -F: the client key and a known-hosts file of its own, so root's
# ~/.ssh is never touched) and STATE_DIR/hosts.txt. Each sshd runs in mount and UTS namespaces of its own: host i
# is named mtx-hi and its /etc/hosts names only itself and localhost. On host 3, STATE_DIR/hidden is an empty tmpfs:
# a file put there exists on this machine and hosts 1-2, not on host 3.
# If PYTHONPATH is set, the sshds pass it on (SetEnv), so the hosts import the same code as this machine; HOME is
# an empty STATE_DIR/home, so logins run none of root's startup files.
# Traffic stays on the bridge: `up` checks that every host address is routed through mtxbr0.
set -euo pipefail
NET=10.213.7
HOSTS=(1 2 3)
cmd=${1:-}
state=${2:-/tmp/mtx-netns}

down() {
  for i in "${HOSTS[@]}"; do
    ns=mtx-h$i
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "mtxv$i" 2>/dev/null || true
  done
  ip link del mtxbr0 2>/dev/null || true
  if [ -d "$state/hidden" ]; then umount "$state/hidden" 2>/dev/null || true; fi
}

up() {
  for tool in ip sshd ssh ssh-keygen unshare; do
    command -v "$tool" >/dev/null || { echo "netns.sh: $tool is missing (apt-get install iproute2 openssh-server openssh-client util-linux)" >&2; exit 3; }
  done
  down
  mkdir -p "$state/hidden" "$state/home" /run/sshd
  chmod 700 "$state"
  rm -f "$state"/id_test* "$state"/host_key* "$state"/known_hosts
  ssh-keygen -q -t ed25519 -N '' -f "$state/id_test"
  ssh-keygen -q -t ed25519 -N '' -f "$state/host_key"
  cp "$state/id_test.pub" "$state/authorized_keys"
  : > "$state/known_hosts"
  ip link add mtxbr0 type bridge
  ip addr add "$NET.1/24" dev mtxbr0
  ip link set mtxbr0 up
  : > "$state/hosts.txt"
  for i in "${HOSTS[@]}"; do
    ns=mtx-h$i addr=$NET.$((i + 1))
    ip netns add "$ns"
    ip link add "mtxv$i" type veth peer name eth0 netns "$ns"
    ip link set "mtxv$i" master mtxbr0 up
    ip netns exec "$ns" ip addr add "$addr/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip route add default via "$NET.1"
    echo "$addr ssh-ed25519 $(cut -d' ' -f2 "$state/host_key.pub")" >> "$state/known_hosts"
    cat > "$state/sshd_$i.conf" <<EOF
ListenAddress $addr
HostKey $state/host_key
PidFile $state/sshd_$i.pid
AuthorizedKeysFile $state/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
AcceptEnv none
LogLevel ERROR
EOF
    # One SetEnv line (sshd keeps only the first): HOME is an empty folder, so a login runs none of root's
    # startup files. The hosts share this machine's home; a `pyenv rehash` in ~/.bashrc killed with a stopped
    # job leaves its lock behind, and every later login then waited 60 s for it (CI failed that way).
    env_line="SetEnv HOME=$state/home"
    if [ -n "${PYTHONPATH:-}" ]; then env_line="$env_line PYTHONPATH=$PYTHONPATH"; fi
    echo "$env_line" >> "$state/sshd_$i.conf"
    # Each host has its own name, which its own /etc/hosts gives its address, as on a real network: Horovod
    # 0.28.1's Gloo binds one of its contexts to the address of the host's name, whatever --network-interface
    # says, and this machine's name may be 127.0.x.1 (Debian's /etc/hosts).
    printf '127.0.0.1 localhost\n%s mtx-h%s\n' "$addr" "$i" > "$state/etc_hosts_$i"
    hide=true
    if [ "$i" = 3 ]; then hide="mount -t tmpfs mtx-hidden '$state/hidden'"; fi
    ip netns exec "$ns" unshare -m -u --propagation private sh -c "hostname mtx-h$i && mount --bind \
      '$state/etc_hosts_$i' /etc/hosts && $hide && exec /usr/sbin/sshd -f '$state/sshd_$i.conf'"
    echo "$addr" >> "$state/hosts.txt"
    route=$(ip route get "$addr")
    case "$route" in *"dev mtxbr0"*) ;; *) echo "netns.sh: $addr is not routed through mtxbr0: $route" >&2; down; exit 4;; esac
  done
  cat > "$state/ssh_config" <<EOF
Host $NET.*
  User root
  IdentityFile $state/id_test
  IdentitiesOnly yes
  UserKnownHostsFile $state/known_hosts
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
EOF
  for i in "${HOSTS[@]}"; do  # each sshd answers before the tests start
    for _ in $(seq 50); do
      ssh -F "$state/ssh_config" -o BatchMode=yes -o ConnectTimeout=2 "$NET.$((i + 1))" true 2>/dev/null && break
      sleep 0.1
    done
    ssh -F "$state/ssh_config" -o BatchMode=yes -o ConnectTimeout=2 "$NET.$((i + 1))" true
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down [STATE_DIR]" >&2; exit 2 ;;
esac
