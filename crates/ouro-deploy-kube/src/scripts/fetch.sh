# The init container: downloads the release bundle (tar.zst) from Ouro into the shared emptyDir
# and unpacks it; the service runs from its files/ directory. Needs curl or wget, zstd and tar.
set -eu
archive="$OURO_BUNDLE_DIR/.bundle.tar.zst"
if command -v curl >/dev/null 2>&1; then
  if [ -n "${OURO_BUNDLE_TOKEN:-}" ]; then
    curl -fsSL -H "Authorization: Bearer $OURO_BUNDLE_TOKEN" -o "$archive" "$OURO_BUNDLE_URL"
  else
    curl -fsSL -o "$archive" "$OURO_BUNDLE_URL"
  fi
else
  if [ -n "${OURO_BUNDLE_TOKEN:-}" ]; then
    wget -q --header "Authorization: Bearer $OURO_BUNDLE_TOKEN" -O "$archive" "$OURO_BUNDLE_URL"
  else
    wget -q -O "$archive" "$OURO_BUNDLE_URL"
  fi
fi
zstd -dc "$archive" | tar -xf - -C "$OURO_BUNDLE_DIR"
rm -f "$archive"
test -d "$OURO_BUNDLE_DIR/files"
