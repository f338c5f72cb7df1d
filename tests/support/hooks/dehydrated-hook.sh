#!/usr/bin/env bash
# dehydrated HOOK for the end-to-end tests.  For dns-01, deploy_challenge and
# clean_challenge set / clear the TXT record _acme-challenge.<domain>. on the
# test DNS server through its HTTP API at $ACME_GATEWAY_TEST_DNS_API; every
# other call (http-01 challenges, startup_hook, deploy_cert, exit_hook, ...)
# is a no-op.  dehydrated exports CHALLENGETYPE while it signs a domain.
set -euo pipefail
handler="${1:-}"
[ $# -gt 0 ] && shift

dns_api() {
  : "${ACME_GATEWAY_TEST_DNS_API:?ACME_GATEWAY_TEST_DNS_API is not set}"
  curl -sS --fail --noproxy '*' --max-time 10 -X POST \
    -H 'Content-Type: application/json' --data "$2" \
    "${ACME_GATEWAY_TEST_DNS_API%/}/$1" >/dev/null
}

case "$handler" in
  deploy_challenge|clean_challenge)
    [ "${CHALLENGETYPE:-}" = "dns-01" ] || exit 0
    # DOMAIN TOKEN_FILENAME TOKEN_VALUE, repeated when HOOK_CHAIN=yes
    while [ $# -ge 3 ]; do
      domain="${1#\*.}"
      if [ "$handler" = deploy_challenge ]; then
        dns_api set-txt "{\"host\": \"_acme-challenge.${domain}.\", \"value\": \"$3\"}"
        echo "dehydrated-hook: _acme-challenge.${domain}. TXT $3"
      else
        dns_api clear-txt "{\"host\": \"_acme-challenge.${domain}.\"}"
      fi
      shift 3
    done ;;
  *) : ;;
esac
exit 0
