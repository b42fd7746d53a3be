#!/usr/bin/env bash
# Installs the Debian packages the real-client tests and the benchmark need. Idempotent: a
# package already present is not fetched again, and `apt-get update` runs only when something
# is missing. Needs root (CI and the dev machines run as root); prints what it does.
set -euo pipefail

packages=(
  podman buildah skopeo   # OCI clients (push/pull/copy over HTTPS)
  docker.io               # dockerd + the docker CLI, started by the tests on a private socket
  docker-registry         # CNCF Distribution 2.8.2: the benchmark's side-by-side peer
  busybox-static          # the one binary our locally built test images are made of
  uidmap fuse-overlayfs   # podman's runtime helpers
  radosgw ceph-mon ceph-osd ceph-common  # Ceph's S3 gateway on a one-node cluster: the real S3 peer
  attr                    # setfattr/getfattr: overlay opaque directories and layer xattrs (runner)
  runc conmon tini        # the task runner: OCI runtime, per-container monitor, init as PID 1
  containernetworking-plugins iptables iproute2  # bridge networking with port mappings for tasks
  procps                  # sysctl: the runner sets a bridge task's namespace sysctls from the host side
  awscli                  # the real `aws ecs` CLI, driven against berth's ECS endpoint in the tests
  python3                 # test/support/syn-probe.py: the raw SYN of the loopback attack (AF_PACKET)
  gcc libc6-dev           # the container-escape attacks build a static ICMP probe for the task image
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup-system: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi

echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's docker.io and docker-registry packages start services on install where an init
# system exists; our tests start their own daemons, so nothing else is touched here.
echo "setup-system: done"
