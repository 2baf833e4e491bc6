#!/usr/bin/env bash
# Generates the local Ed25519 signing keys on first run, into .local/ (git-ignored). Never
# overwrites existing keys. In staging and production the same variables come from wrangler
# secrets (edge) and the core's secret store; no key is ever committed.
#
#   .local/edge.env  EDGE_SIGNING_KEY (the edge's private seed), CORE_VERIFYING_KEYS
#   .local/core.env  CORE_SIGNING_KEY (the core's private seed), EDGE_VERIFYING_KEYS,
#                    CORE_WEBHOOK_KEYS (the AES-256 key that seals partner webhooks' secrets)
#
# Format: a signing key is "<kid>:<base64url 32-byte seed>"; verifying keys are a comma-separated
# list of "<kid>:<base64url 32-byte public key>" (several during a rotation).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keys="$LOCAL/keys"
# The webhook sealing key, added to a core.env made before it existed (never replaced: it opens
# the secrets already sealed with it).
webhook_key() {
  grep -q '^CORE_WEBHOOK_KEYS=' "$LOCAL/core.env" && return 0
  (umask 077 && echo "CORE_WEBHOOK_KEYS=webhooks-dev-$(date +%Y%m%d):$(openssl rand -base64 32)" >>"$LOCAL/core.env")
}
if [ -f "$LOCAL/edge.env" ] && [ -f "$LOCAL/core.env" ]; then webhook_key; exit 0; fi
command -v openssl >/dev/null || die "openssl is needed to generate dev keys (apt-get install openssl)"
umask 077
mkdir -p "$keys"

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# Writes <name>.seed and <name>.pub (raw 32 bytes each, base64url) for a new Ed25519 key.
new_key() {
  local name=$1
  openssl genpkey -algorithm ed25519 -outform DER -out "$keys/$name.der" 2>/dev/null
  # PKCS#8 DER of an Ed25519 key ends with the 32-byte seed; SPKI DER ends with the public key.
  tail -c 32 "$keys/$name.der" | b64url >"$keys/$name.seed"
  openssl pkey -inform DER -in "$keys/$name.der" -pubout -outform DER 2>/dev/null | tail -c 32 | b64url >"$keys/$name.pub"
  rm -f "$keys/$name.der"
}

kid_suffix=$(date +%Y%m%d)
new_key edge
new_key core
edge_kid="edge-dev-$kid_suffix"
core_kid="core-dev-$kid_suffix"
cat >"$LOCAL/edge.env" <<ENV
EDGE_SIGNING_KEY=$edge_kid:$(cat "$keys/edge.seed")
CORE_VERIFYING_KEYS=$core_kid:$(cat "$keys/core.pub")
ENV
cat >"$LOCAL/core.env" <<ENV
CORE_SIGNING_KEY=$core_kid:$(cat "$keys/core.seed")
EDGE_VERIFYING_KEYS=$edge_kid:$(cat "$keys/edge.pub")
ENV
webhook_key
rm -f "$keys"/*.seed
log "generated dev signing keys in $LOCAL (kids $edge_kid, $core_kid)"
