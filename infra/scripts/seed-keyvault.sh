#!/bin/sh
# Make the two key rings in Key Vault once (never overwrites): the token service's signing keys
# (auth-signing-keys, AUTH_SIGNING_KEYS) and the key ring that seals webhook and task secrets (secrets-keys,
# SECRETS_KEYS). Run by `azd up` after provisioning (KEY_VAULT_NAME from the deployment's outputs), or by hand:
#   KEY_VAULT_NAME=kv-... infra/scripts/seed-keyvault.sh
# The rings are made by the app's own code (services/auth/signing.py, services/platform/secrets.py).
set -eu
: "${KEY_VAULT_NAME:?set KEY_VAULT_NAME}"
PYTHON="${PYTHON:-.venv/bin/python}"
seed() {
  name="$1"; program="$2"
  if az keyvault secret show --vault-name "$KEY_VAULT_NAME" --name "$name" --query id -o tsv >/dev/null 2>&1; then
    echo "$name: present, kept"
    return
  fi
  file="$(mktemp)"; trap 'rm -f "$file"' EXIT
  "$PYTHON" -c "$program" >"$file"
  az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name "$name" --file "$file" --query id -o tsv >/dev/null
  rm -f "$file"
  echo "$name: made"
}
seed auth-signing-keys "from services.auth.signing import SigningKey, ring_json; print(ring_json([SigningKey.generate()]))"
seed secrets-keys "from services.platform.secrets import SecretKey, keys_json; print(keys_json([SecretKey.generate()]))"
