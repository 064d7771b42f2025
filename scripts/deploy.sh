#!/usr/bin/env bash
# Deploy AdvisorOS to one environment with the az CLI, the way ops would by hand:
#   1. what-if: show what the Bicep templates would change;
#   2. deploy the templates (an incremental deployment: running it again changes nothing);
#   3. publish the function package (the committed code of HEAD);
#   4. smoke-test GET /api/health, then GET /api/ready, until each answers 200.
#
# Usage: scripts/deploy.sh ENV [--what-if]      (ENV: dev or prod)
#
# Needs a logged-in az (az login, or azure/login in GitHub Actions) and, for the Postgres
# administrator, POSTGRES_ADMIN_PASSWORD in the environment. AZURE_RESOURCE_GROUP (default
# advisoros-ENV) and AZURE_LOCATION (default westeurope) choose where.
set -euo pipefail

usage() {
  echo "usage: scripts/deploy.sh dev|prod [--what-if]" >&2
  exit 2
}

env_name="${1:-}"
mode="${2:-deploy}"
case "$env_name" in dev | prod) ;; *) usage ;; esac
case "$mode" in deploy | --what-if) ;; *) usage ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

group="${AZURE_RESOURCE_GROUP:-advisoros-$env_name}"
location="${AZURE_LOCATION:-westeurope}"
params="bicep/$env_name.bicepparam"
deployment="advisoros-$env_name"
smoke_attempts="${SMOKE_ATTEMPTS:-20}"
smoke_delay_s="${SMOKE_DELAY_S:-15}"

if [[ -z "${POSTGRES_ADMIN_PASSWORD:-}" ]]; then
  echo "POSTGRES_ADMIN_PASSWORD is not set: the Postgres administrator needs a password" >&2
  exit 2
fi

echo "== resource group $group ($location)"
az group create --name "$group" --location "$location" --output none

echo "== what-if"
az deployment group what-if --resource-group "$group" --name "$deployment" \
  --template-file bicep/main.bicep --parameters "$params"
if [[ "$mode" == "--what-if" ]]; then
  exit 0
fi

echo "== deploy"
outputs="$(az deployment group create --resource-group "$group" --name "$deployment" \
  --template-file bicep/main.bicep --parameters "$params" \
  --query properties.outputs --output json)"
output() {
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]]["value"])' \
    "$outputs" "$1"
}
app="$(output functionAppName)"
api_host="$(output apiHostName)"

echo "== publish to $app"
mkdir -p dist
package="dist/advisoros-$(git rev-parse --short HEAD).zip"
# The committed files the Functions host needs; the local host, tests and tools stay out.
git archive --format=zip --output "$package" HEAD \
  function_app.py host.json requirements.txt functions shared migrations
az functionapp deployment source config-zip --resource-group "$group" --name "$app" \
  --src "$package" --build-remote true

echo "== smoke test https://$api_host/api/health and /api/ready"
# Alive first (the new code runs), then ready (it reaches its database, storage and bus).
for probe in health ready; do
  curl --fail --silent --show-error --retry "$smoke_attempts" --retry-delay "$smoke_delay_s" \
    --retry-all-errors --max-time 30 "https://$api_host/api/$probe"
  echo
done

if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  echo "api_url=https://$api_host" >>"$GITHUB_OUTPUT"
fi
echo "== $env_name deployed: https://$api_host"
