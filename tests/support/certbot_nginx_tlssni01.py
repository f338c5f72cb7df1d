"""
Drive the tls-sni-01 authenticator of a real certbot nginx plugin through
certbot's own plugin API, the way certbot's ``auth_handler`` does in a run:
``prepare()``, ``perform([achall])``, then ``cleanup([achall])``.

Run it with the python of the certbot 0.20 venv (``.venvs/certbot-nginx-0.20.0``,
whose nginx plugin answers only tls-sni-01); it imports nothing of the
gateway::

    python certbot_nginx_tlssni01.py --nginx-server-root DIR --nginx-ctl /usr/sbin/nginx \\
        --config-dir C --work-dir W --logs-dir L --account-key KEY.pem \\
        --domain a.example.test --token TOKEN

It parses certbot's own command line (``certonly --nginx`` with the
``--nginx-server-root``, ``--nginx-ctl`` and ``--tls-sni-01-port`` flags an
operator would give), so the plugin is configured exactly as in a certbot
run.  After ``perform`` -- the plugin has written its challenge server block
and certificate and reloaded (or started) nginx -- it prints one JSON line::

    {"performed": true, "z_domain": "...acme.invalid",
     "response": <the challenge response certbot POSTs>, "challenge_conf": PATH,
     "cert_path": PATH}

then waits for a line on standard input, runs ``cleanup`` (the plugin removes
its block and reloads nginx), prints ``{"cleaned_up": true}`` and exits.

What the plugin does, seen by ``tests/e2e/test_tlssni01_nginx.py`` (and read
in certbot-nginx 0.20.0 and 0.21.0), for whoever offers tls-sni-01 in the
v1 face:

- certbot-nginx 0.20.0's ``get_chall_pref`` is ``[tls-sni-01]``: without a
  tls-sni-01 challenge in the authorization it has nothing to answer.
  0.21.0 and later return ``[tls-sni-01, http-01]``: they too pick
  tls-sni-01 whenever it is offered, so offering it changes what newer
  nginx plugins answer as well.
- Its answer to the v1 challenge is ``{"resource": "challenge", "type":
  "tls-sni-01", "keyAuthorization": "<token>.<thumbprint>"}``.
- The challenge certificate is self-signed, CN ``dummy``, SANs ``dummy``
  and the z name (78 characters: too long for a CN).
- The challenge server block copies the ``listen`` addresses of the
  site's vhost when it already has an SSL one (``listen 127.0.0.1:PORT
  ssl`` stays on loopback); for a vhost without SSL the plugin first adds
  ``listen <--tls-sni-01-port> ssl`` with a snakeoil certificate, on every
  interface.  The gateway's ``--tls-sni-check-port`` is that port.
- The block's ``include`` goes first in the ``http`` block, so it becomes
  the default server of its address: a wrong SNI name gets the challenge
  certificate too (with the other name), not the site's.
- ``perform`` reloads nginx (``nginx -c <conf> -s reload``, or starts it
  when the reload fails) and sleeps one second; nginx applies a reload
  asynchronously, so a checker may need to look again shortly after.
- A full certbot 0.20 run is ``certbot certonly --nginx
  --nginx-server-root DIR --nginx-ctl /usr/sbin/nginx [--tls-sni-01-port
  PORT] --server <v1 directory> -d NAME``; it speaks ACME v1 only (v2 came
  with certbot 0.22).
"""

import argparse
import json
import sys
import warnings


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--nginx-server-root", required=True)
    parser.add_argument("--nginx-ctl", required=True)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--logs-dir", required=True)
    parser.add_argument("--account-key", required=True, help="PEM private key (RSA)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--token", required=True, help="the challenge token, base64url")
    parser.add_argument("--tls-sni-01-port", default=None)
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore")
    from cryptography.hazmat.backends import default_backend
    from cryptography.hazmat.primitives import serialization

    from acme import challenges, messages
    from acme import jose
    from certbot import achallenges, cli, configuration
    from certbot.plugins import disco

    certbot_args = [
        "certonly", "--nginx", "--non-interactive",
        "--nginx-server-root", args.nginx_server_root, "--nginx-ctl", args.nginx_ctl,
        "--config-dir", args.config_dir, "--work-dir", args.work_dir,
        "--logs-dir", args.logs_dir, "-d", args.domain,
    ]
    if args.tls_sni_01_port:
        certbot_args += ["--tls-sni-01-port", str(args.tls_sni_01_port)]
    plugins = disco.PluginsRegistry.find_all()
    config = configuration.NamespaceConfig(cli.prepare_and_parse_args(plugins, certbot_args))

    with open(args.account_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None, backend=default_backend())
    account_key = jose.JWKRSA(key=key)

    nginx = plugins["nginx"].init(config)
    nginx.prepare()
    preferred = [c.typ for c in nginx.get_chall_pref(args.domain)]

    chall = challenges.TLSSNI01(token=jose.b64decode(args.token))
    challb = messages.ChallengeBody(chall=chall, uri="https://ca.invalid/acme/challenge/1/1",
                                    status=messages.STATUS_PENDING)
    achall = achallenges.KeyAuthorizationAnnotatedChallenge(
        challb=challb, domain=args.domain, account_key=account_key)

    responses = nginx.perform([achall])
    response = responses[0]
    from certbot_nginx import tls_sni_01

    doer = tls_sni_01.NginxTlsSni01(nginx)
    print(json.dumps({
        "performed": True,
        "preferred_challenges": preferred,
        "z_domain": response.z_domain.decode("ascii"),
        "response": response.to_partial_json(),
        "challenge_conf": doer.challenge_conf,
        "cert_path": doer.get_cert_path(achall),
    }), flush=True)

    sys.stdin.readline()
    nginx.cleanup([achall])
    print(json.dumps({"cleaned_up": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
