# Shared settings for the scripts in this folder. Sourced, not run.
# Everything slow (Go builds, npm packages, binaries) is cached outside the repository,
# keyed by version, so a second run on the same machine builds nothing.

RAIBID_CACHE="${RAIBID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/raibid-operator}"
KUBE_VERSION="v1.36.3"
KUBE_STAGING_VERSION="v0.36.3"
KWOK_VERSION="v0.8.0"
ETCD_VERSION="3.6.10"

# Where ready-made control-plane binaries live. KUBEBUILDER_ASSETS (the envtest convention)
# wins when it points at a folder that already has them.
control_plane_bin_dir() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
    printf '%s\n' "$KUBEBUILDER_ASSETS"
  else
    printf '%s\n' "$RAIBID_CACHE/control-plane/kube-$KUBE_VERSION-kwok-$KWOK_VERSION-etcd-$ETCD_VERSION"
  fi
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
