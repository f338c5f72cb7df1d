#!/bin/sh
# The gateway's --dns01-hook in tests: publishes to the test DNS server's API.
# Called as: gateway-dns01-hook.sh API_URL LOG_FILE deploy|cleanup DOMAIN VALUE
# (the gateway appends the last three), with CERTBOT_DOMAIN and
# CERTBOT_VALIDATION also set, as certbot's manual hooks get them.
set -eu
api=$1 log=$2 action=$3 domain=$4 value=$5
[ "$domain" = "$CERTBOT_DOMAIN" ] && [ "$value" = "$CERTBOT_VALIDATION" ] || { echo "variables differ" >&2; exit 2; }
echo "$action $domain $value" >> "$log"
case "$action" in
  deploy)  curl -sf --noproxy '*' -d "{\"host\": \"_acme-challenge.$domain.\", \"value\": \"$value\"}" "$api/set-txt" >/dev/null ;;
  cleanup) curl -sf --noproxy '*' -d "{\"host\": \"_acme-challenge.$domain.\"}" "$api/clear-txt" >/dev/null ;;
esac
