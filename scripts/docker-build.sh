#!/usr/bin/env bash
# Builds the image runnel:dev (Dockerfile at the repository root, FROM scratch) from statically linked
# runnel-broker and runnel binaries. runnel-verify (the history checker the docker chaos scenarios run on the
# host, scripts/chaos/run-all.sh --docker) is built beside them in the same static target dir, not put in the
# image.
#
# The binaries are built with crt-static into their own target directory (target/static), so this does not
# invalidate the normal release build. The script checks that both are static (`file`, `ldd`), stages them
# without their debug info, beside an empty data/ directory, in target/static/docker-context (the only build
# context: nothing else of the repository is sent to the daemon) and builds the image. No base image and no
# registry are used; nothing is pulled.
# Idempotent: a rerun rebuilds what changed, retags runnel:dev and removes the image it replaced if that is left
# untagged. Fails loudly on the first error.
#
# Usage: scripts/docker-build.sh        (env IMAGE overrides the tag, default runnel:dev)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-runnel:dev}
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=target/static
BIN_DIR="$CARGO_TARGET_DIR/$TARGET/release"
CONTEXT="$CARGO_TARGET_DIR/docker-context"
BINARIES=(runnel-broker runnel)

die() { echo "docker-build: $*" >&2; exit 1; }

for tool in cargo docker file ldd strip; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
docker info >/dev/null 2>&1 || die "the docker daemon is not reachable (docker info fails)"

echo "docker-build: cargo build (static, $TARGET, into $CARGO_TARGET_DIR)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --target "$TARGET" --bin runnel-broker --bin runnel --bin runnel-verify
[ -x "$BIN_DIR/runnel-verify" ] || die "no binary $BIN_DIR/runnel-verify"

for bin in "${BINARIES[@]}"; do
  path="$BIN_DIR/$bin"
  [ -x "$path" ] || die "no binary $path"
  desc=$(file -b "$path")
  case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$path is not static: $desc" ;;
  esac
  # ldd exits non-zero on a static binary; only its words matter here.
  deps=$(ldd "$path" 2>&1 || true)
  case "$deps" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) die "$path has dynamic dependencies: $deps" ;;
  esac
  echo "docker-build: $bin is static ($desc)"
done

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/data"
for bin in "${BINARIES[@]}"; do
  # Without the debug info (the release profile keeps it for profiling): a ~5x smaller image; the symbol
  # table stays, so panics still name their functions.
  strip --strip-debug -o "$CONTEXT/$bin" "$BIN_DIR/$bin"
done
cp Dockerfile "$CONTEXT/Dockerfile"

old_id=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
echo "docker-build: docker build -t $IMAGE"
# --no-cache: the image is two COPYs (nothing to save), and a stale cached COPY layer once gave a binary
# that would not exec ("permission denied") although the context held the right one.
docker build --pull=false --no-cache -t "$IMAGE" "$CONTEXT"
new_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")

if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  # The replaced image, now untagged: remove it so reruns do not pile up images (left alone if still in use).
  if [ -z "$(docker image inspect --format '{{join .RepoTags ","}}' "$old_id" 2>/dev/null)" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
fi

# The image must start: both binaries answer --version inside it.
docker run --rm "$IMAGE" --version >/dev/null || die "runnel-broker --version fails inside $IMAGE"
docker run --rm --entrypoint /usr/local/bin/runnel "$IMAGE" --version >/dev/null \
  || die "runnel --version fails inside $IMAGE"
echo "docker-build: built $IMAGE ($new_id)"
