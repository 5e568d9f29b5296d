#!/usr/bin/env bash
# Unpack Debian trixie's containerd 1.7.24 into target/containerd/1.7.24 for
# the shim's tests: it stores the Weft artifact's non-tar layers without
# unpacking them (1.6.25+/1.7.7+/2.x), which Debian bookworm's 1.6.20
# refuses. The package comes from the Debian mirror this machine's apt
# already uses, checked against a pinned SHA-256; nothing is installed
# system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.7.24
dest=target/containerd/$version
[ -x "$dest/usr/bin/containerd" ] && exit 0

case "$(dpkg --print-architecture 2>/dev/null || uname -m)" in
    amd64 | x86_64)
        deb="containerd_1.7.24~ds1-6+deb13u1_amd64.deb"
        sha256=ed708deb96fe476a3bce4efa5c0538dfbcf717ab9a7c7944ba7260342c25899c
        ;;
    *)
        echo "fetch-containerd: no pinned containerd $version package for this architecture; the artifact-image tests will skip" >&2
        exit 0
        ;;
esac

# The first Debian mirror apt is configured with (deb822 or one-line form).
mirror=$(
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
    } | grep -m1 '/debian/\?$' || true
)
if [ -z "$mirror" ]; then
    echo "fetch-containerd: no Debian mirror in apt's sources" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/containerd.deb" "${mirror%/}/pool/main/c/containerd/$deb"
echo "$sha256  $tmp/containerd.deb" | sha256sum -c --quiet -
mkdir -p "$tmp/root"
dpkg-deb -x "$tmp/containerd.deb" "$tmp/root"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/root" "$dest"
"$dest/usr/bin/containerd" --version
