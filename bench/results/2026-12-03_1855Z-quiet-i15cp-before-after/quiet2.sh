#!/bin/bash
# Before/after, alternating three times (A B B A A B), one quiet window.
cd /work/wt/i15cp
export ACME_GATEWAY_LEGACY_VENV=$PWD/.venvs/certbot1
T=$(date -u +%Y-%m-%d_%H%MZ)
echo "$T"
i=0
for which in before after after before before after; do
  i=$((i+1))
  echo "run $i $which start $(date -u +%H:%M:%S) $(uptime)"
  .venv/bin/python bench/run.py --sections issuance --n 40 --no-chart --gateway-src /tmp/i15cp/$which --out /tmp/i15cp/q2-${T}-$i-$which > /tmp/i15cp/q2-${T}-$i-$which.log 2>&1
  echo "run $i $which end $(date -u +%H:%M:%S) $(uptime)"
done
