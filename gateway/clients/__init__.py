"""
Knowledge of legacy ACME clients' on-disk layouts (certbot, dehydrated,
acme.sh): where they keep account keys and server URLs.
"""
