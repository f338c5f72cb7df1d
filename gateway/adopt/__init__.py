"""
``acme-gateway adopt``: move a legacy client installation onto the gateway.

During Let's Encrypt's v1 shutdown, upgrading a client often did not help:
its stored configuration still named the dead v1 URL (certbot's renewal
files, dehydrated's ``CA=``, acme.sh's per-domain ``Le_API``).  Adoption
rewrites exactly those settings to the gateway, gives the client its existing
account under the gateway's URL (so it never registers a new key), and puts
that account key into the gateway's key store.

One module per job:

* `gateway.adopt.changes`: the plan (edits, new files, imported keys,
  problems), applying it with backups and a manifest, and undoing it;
* `gateway.adopt.keyimport`: placing keys into the key store under names
  that say where they came from;
* `gateway.adopt.lines`: finding and rewriting one setting in a
  configuration file without reformatting anything else;
* `gateway.adopt.certbot`, `gateway.adopt.dehydrated`,
  `gateway.adopt.acmesh`: each client's layout, planned;
* its command line is `gateway.process.adopt_command` (the process level, with
  the rest of the command line).
"""
