#!/bin/sh
# certbot --manual-cleanup-hook for dns-01 in the end-to-end tests: remove the
# TXT records at _acme-challenge.$CERTBOT_DOMAIN. from the test DNS server.
set -eu
: "${ACME_GATEWAY_TEST_DNS_API:?ACME_GATEWAY_TEST_DNS_API is not set}"
domain=${CERTBOT_DOMAIN#\*.}
curl -sS --fail --noproxy '*' --max-time 10 -X POST \
  -H 'Content-Type: application/json' \
  --data "{\"host\": \"_acme-challenge.${domain}.\"}" \
  "${ACME_GATEWAY_TEST_DNS_API%/}/clear-txt" >/dev/null
