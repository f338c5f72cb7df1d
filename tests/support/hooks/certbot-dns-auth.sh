#!/bin/sh
# certbot --manual-auth-hook for dns-01 in the end-to-end tests: publish
# $CERTBOT_VALIDATION as a TXT record at _acme-challenge.$CERTBOT_DOMAIN. on the
# test DNS server (tests/support/dnsserver.py) through its HTTP API at
# $ACME_GATEWAY_TEST_DNS_API.  certbot gives wildcard names without "*.";
# strip it anyway in case a client does not.
set -eu
: "${ACME_GATEWAY_TEST_DNS_API:?ACME_GATEWAY_TEST_DNS_API is not set}"
domain=${CERTBOT_DOMAIN#\*.}
curl -sS --fail --noproxy '*' --max-time 10 -X POST \
  -H 'Content-Type: application/json' \
  --data "{\"host\": \"_acme-challenge.${domain}.\", \"value\": \"${CERTBOT_VALIDATION}\"}" \
  "${ACME_GATEWAY_TEST_DNS_API%/}/set-txt" >/dev/null
echo "certbot-dns-auth: _acme-challenge.${domain}. TXT ${CERTBOT_VALIDATION}"
