#!/usr/bin/env bash
# Builds the valkey-dr container image from scratch: no base image is pulled, so it builds
# on a machine without a registry. The root filesystem holds the given binary and exactly
# what it needs at run time, nothing else (no shell, no package manager):
#
#   /usr/local/bin/valkey-dr                the binary, as given (debug or release)
#   the shared libraries ldd lists          libc, libgcc_s, libm... and the dynamic loader
#   /etc/passwd, /etc/group                 root and nonroot (65532:65532), as in distroless
#   /etc/nsswitch.conf                      glibc looks users and hosts up in files, then DNS
#   /etc/ssl/certs/ca-certificates.crt      the roots rustls-native-certs reads (AWS APIs)
#   /etc/valkey-dr                          empty: agent.toml is mounted here
#   /var/lib/valkey-dr                      the state directory, 0700 nonroot; a volume,
#                                           since the root filesystem is meant to be read-only
#
# image/Dockerfile builds the same image for users with a network; image/README.md says how
# to run either. The image runs as 65532:65532.
#
# Usage: image/build.sh <valkey-dr binary> <output directory>
# Writes <out>/oci (an OCI image layout, tag valkey-dr:<version>) and
# <out>/valkey-dr-<version>.oci.tar (the same layout as one file, for `podman load`, which names
# the image after the tag, or `skopeo copy oci-archive:`).
#
# Needs: root (umoci records the owners of the files only when it can read them as they are),
# umoci, ldd, GNU tar, and the host's CA bundle (Debian's ca-certificates). Optional
# environment: SOURCE_DATE_EPOCH (every timestamp in the image; default: the last commit's
# time), CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt), IMAGE_SOURCE (the
# org.opencontainers.image.source label; default: the git remote "origin", if any).
set -euo pipefail

# The image's contract: image/Dockerfile repeats these, and tests/tests/image.rs checks that
# both say the same.
readonly IMAGE_USER="65532:65532"
readonly BIN_PATH="/usr/local/bin/valkey-dr"
readonly CONFIG_DIR="/etc/valkey-dr"
readonly CONFIG_PATH="/etc/valkey-dr/agent.toml"
readonly STATE_DIR="/var/lib/valkey-dr"
readonly CERT_PATH="/etc/ssl/certs/ca-certificates.crt"

die() {
    echo "image/build.sh: $*" >&2
    exit 1
}

[[ $# -eq 2 ]] || die "usage: image/build.sh <valkey-dr binary> <output directory>"
bin=$(realpath -e -- "$1") || die "no binary at $1"
[[ -x $bin ]] || die "$bin is not executable"
out=$2
[[ $(id -u) -eq 0 ]] || die "run as root (e.g. with sudo): the image's files must be owned by root and ${STATE_DIR} by 65532, and umoci records owners only as root"
command -v umoci >/dev/null || die "umoci is missing: apt-get install umoci"
command -v ldd >/dev/null || die "ldd is missing: apt-get install libc-bin"
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $ca_bundle ]] || die "no CA bundle at ${ca_bundle}: apt-get install ca-certificates"

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# The version is the binary's own, so a label never claims another build.
version=$("$bin" --version | awk '{print $2}')
[[ $version =~ ^[0-9A-Za-z._+-]+$ ]] || die "$bin --version printed no version"
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || true)
if [[ -n $revision ]] && [[ -n $(git -C "$repo" status --porcelain 2>/dev/null) ]]; then
    revision="${revision}-dirty"
fi
source_url=${IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || true)}
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@${epoch}" +%Y-%m-%dT%H:%M:%SZ)

mkdir -p -- "$out"
out=$(realpath -e -- "$out")
layout="$out/oci"
tag="valkey-dr:${version}"
archive="$out/valkey-dr-${version}.oci.tar"
rm -rf -- "$layout" "$archive"

rootfs=$(mktemp -d)
trap 'rm -rf -- "$rootfs"' EXIT
chmod 0755 "$rootfs"

# The binary and every library the loader would map for it, at the path ldd names (the
# loader finds them there: Debian's ld.so searches the multiarch directories without a
# cache). A static binary needs none.
install -D -m 0755 "$bin" "$rootfs$BIN_PATH"
if ldd_out=$(ldd "$bin" 2>&1); then
    while read -r lib; do
        [[ -n $lib ]] || continue
        install -D -m 0755 "$(realpath -e -- "$lib")" "$rootfs$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$ldd_out")
elif [[ $ldd_out != *"not a dynamic executable"* ]]; then
    die "ldd $bin failed: $ldd_out"
fi

mkdir -p "$rootfs/etc/ssl/certs" "$rootfs$CONFIG_DIR" "$rootfs$STATE_DIR"
install -m 0644 "$ca_bundle" "$rootfs$CERT_PATH"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
chmod 0755 "$rootfs$CONFIG_DIR"
# The agent keeps its admin token and failover state here and wants it private; a named
# volume mounted here starts with this owner and mode.
chown 65532:65532 "$rootfs$STATE_DIR"
chmod 0700 "$rootfs$STATE_DIR"
find "$rootfs" -exec touch -h -d "@${epoch}" {} +

umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci insert --image "$layout:$tag" \
    --history.created "$created" --history.created_by "image/build.sh" \
    --history.comment "valkey-dr ${version} and what it needs" \
    "$rootfs" /

labels=(
    --config.label "org.opencontainers.image.title=valkey-dr"
    --config.label "org.opencontainers.image.description=DNS health-checking failover agent for ElastiCache Valkey Serverless"
    --config.label "org.opencontainers.image.version=${version}"
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
    --config.label "org.opencontainers.image.created=${created}"
)
[[ -z $revision ]] || labels+=(--config.label "org.opencontainers.image.revision=${revision}")
[[ -z $source_url ]] || labels+=(--config.label "org.opencontainers.image.source=${source_url}")

umoci config --image "$layout:$tag" \
    --created "$created" --history.created "$created" --history.created_by "image/build.sh" \
    --config.user "$IMAGE_USER" \
    --config.entrypoint "$BIN_PATH" \
    --config.cmd run --config.cmd --config --config.cmd "$CONFIG_PATH" \
    --config.workingdir / \
    --config.env "PATH=/usr/local/bin" \
    --config.env "VALKEY_DR_CONFIG=${CONFIG_PATH}" \
    --config.volume "$STATE_DIR" \
    --config.stopsignal SIGTERM \
    "${labels[@]}"
umoci gc --layout "$layout"

# The archive is the layout itself, tarred with fixed owners, order and times.
tar --sort=name --mtime="@${epoch}" --owner=0 --group=0 --numeric-owner \
    -C "$layout" -cf "$archive" .

echo "image: ${layout}:${tag} (OCI layout), ${archive} (oci-archive)"
echo "size: $(du -sh --apparent-size "$layout" | cut -f1) layout, $(du -sh --apparent-size "$archive" | cut -f1) archive, $(du -sh --apparent-size "$rootfs" | cut -f1) unpacked"
