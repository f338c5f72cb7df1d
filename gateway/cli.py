"""
The ``acme-gateway`` command.

    acme-gateway serve --upstream URL --keys DIR [--upstream-ca-bundle PEM]
                       [--state FILE] [--listen ENDPOINT] [--base-url URL]
    acme-gateway keys list --keys DIR

Every flag can also come from the environment as ``ACME_GATEWAY_<FLAG>``
(``--upstream-ca-bundle`` → ``ACME_GATEWAY_UPSTREAM_CA_BUNDLE``); a flag on
the command line wins.  A bad value fails at start-up with a message naming
the flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from gateway import __version__

ENV_PREFIX = "ACME_GATEWAY_"


def env_name(flag: str) -> str:
    """
    The environment variable of a ``--flag``.
    """
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


class _EnvDefault(argparse.Action):
    """
    An option whose default comes from ``ACME_GATEWAY_<FLAG>``.
    """

    def __init__(self, option_strings, dest, required=False, default=None, **kwargs):
        variable = env_name(option_strings[-1])
        if variable in os.environ:
            default = os.environ[variable]
            required = False
        kwargs["help"] = (kwargs.get("help") or "") + f" [env: {variable}]"
        super().__init__(option_strings, dest, required=required, default=default, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def _bool(text) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acme-gateway",
        description="Serve the ACME v1 API to legacy clients and translate it to an ACME v2 CA.",
    )
    parser.add_argument("--version", action="version", version=f"acme-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway",
                                description="Run the gateway's v1 face in front of an ACME v2 CA.")
    serve.add_argument("--upstream", action=_EnvDefault, required=True, metavar="URL",
                       help="the upstream ACME v2 directory URL")
    serve.add_argument("--keys", action=_EnvDefault, required=True, metavar="DIR",
                       help="the key store: every private key file below DIR is loaded "
                            "(PEM PKCS#1/PKCS#8/SEC1, JWK JSON; client account trees welcome)")
    serve.add_argument("--upstream-ca-bundle", action=_EnvDefault, metavar="PEM",
                       help="PEM roots that verify the upstream's TLS (default: system trust)")
    serve.add_argument("--state", action=_EnvDefault, default="./acme-gateway.sqlite3", metavar="FILE",
                       help="the SQLite state database (default: %(default)s)")
    serve.add_argument("--listen", action=_EnvDefault, default="tcp:4000:interface=127.0.0.1",
                       metavar="ENDPOINT",
                       help="Twisted server endpoint of the v1 face; ssl: endpoints give HTTPS "
                            "(default: %(default)s)")
    serve.add_argument("--base-url", action=_EnvDefault, metavar="URL",
                       help="public base URL for every link and Location "
                            "(default: derived from each request)")
    serve.add_argument("--agree-to-terms", action=_EnvDefault, default="true", metavar="BOOL",
                       help="agree to the upstream CA's terms of service for a client that sent "
                            "no agreement (default: %(default)s)")
    serve.add_argument("--request-timeout", action=_EnvDefault, default="30", metavar="SECONDS",
                       help="seconds before an upstream request is abandoned (default: %(default)s)")
    revalidation = serve.add_argument_group(
        "revalidation", "How the gateway validates names itself when the upstream CA does not "
        "honour a client's authorizations (and for every name in managed mode).")
    revalidation.add_argument("--http01-listen", action=_EnvDefault, metavar="ENDPOINT",
                              help="Twisted endpoint of the built-in HTTP-01 responder; route port "
                                   "80's /.well-known/acme-challenge/ of the names to it")
    revalidation.add_argument("--dns01-hook", action=_EnvDefault, metavar="CMD",
                              help="command run as `CMD deploy|cleanup DOMAIN TXT-VALUE` with "
                                   "CERTBOT_DOMAIN and CERTBOT_VALIDATION set")
    revalidation.add_argument("--dns01-rfc2136", action=_EnvDefault, metavar="HOST:PORT",
                              help="DNS server accepting RFC 2136 dynamic updates")
    revalidation.add_argument("--dns01-rfc2136-key-name", action=_EnvDefault, metavar="NAME",
                              help="TSIG key name for RFC 2136 updates")
    revalidation.add_argument("--dns01-rfc2136-key-secret", action=_EnvDefault, metavar="BASE64",
                              help="TSIG key secret (base64, as tsig-keygen prints it)")
    revalidation.add_argument("--dns01-rfc2136-key-algorithm", action=_EnvDefault,
                              default="hmac-sha256", metavar="ALG",
                              help="TSIG algorithm (default: %(default)s)")
    revalidation.add_argument("--dns01-rfc2136-zone", action=_EnvDefault, metavar="ZONE",
                              help="zone to update (default: found by SOA queries to the server)")
    revalidation.add_argument("--dns01-propagation-seconds", action=_EnvDefault, default="0",
                              metavar="SECONDS",
                              help="wait after publishing a TXT record before the CA checks it "
                                   "(default: %(default)s)")
    revalidation.add_argument("--challenge-preference", action=_EnvDefault, default="http-01,dns-01",
                              metavar="TYPES",
                              help="challenge types to try for names that are not wildcards, in "
                                   "order (wildcards always use dns-01) (default: %(default)s)")
    revalidation.add_argument("--unknown-keys", action=_EnvDefault, default="reject",
                              choices=("reject", "managed"),
                              help="reject: refuse clients whose key is not in the key store; "
                                   "managed: serve them with an upstream key the gateway creates "
                                   "and keeps, validating every name itself (default: %(default)s)")
    revalidation.add_argument("--managed-keys", action=_EnvDefault, metavar="DIR",
                              help="where managed-mode upstream keys are kept "
                                   "(default: beside --state, <state>.managed-keys)")

    demo = commands.add_parser(
        "demo", help="run a local demo: Pebble upstream, SQLite state, the gateway on loopback",
        description="Start Debian's Pebble as a local ACME v2 CA and the gateway in front of it, "
                    "all on 127.0.0.1, and print a certbot command that gets a certificate.")
    demo.add_argument("--workdir", action=_EnvDefault, default="./demo", metavar="DIR",
                      help="where the demo keeps its state, keys and logs (default: %(default)s)")
    demo.add_argument("--port", action=_EnvDefault, default="4000", metavar="PORT",
                      help="the gateway's v1 port on 127.0.0.1 (default: %(default)s)")
    demo.add_argument("--http01-port", action=_EnvDefault, default="5002", metavar="PORT",
                      help="the port Pebble validates http-01 on (default: %(default)s)")
    demo.add_argument("--certbot", action=_EnvDefault, metavar="PATH",
                      help="the certbot 1.x executable to show in the printed command")

    keys = commands.add_parser("keys", help="inspect the key store")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    listing = key_commands.add_parser("list", help="print each key's RFC 7638 thumbprint, type and file")
    listing.add_argument("--keys", action=_EnvDefault, required=True, metavar="DIR",
                         help="the key store directory")
    return parser


def _fail(parser: argparse.ArgumentParser, flag: str, message: str):
    parser.error(f"{flag}: {message}")


def serve_config(parser, args):
    from gateway.service import ServeConfig

    if not args.upstream.startswith(("https://", "http://")):
        _fail(parser, "--upstream", f"expected an http(s) URL, got {args.upstream!r}")
    if not os.path.isdir(args.keys):
        _fail(parser, "--keys", f"{args.keys!r} is not a directory")
    if args.upstream_ca_bundle and not os.path.isfile(args.upstream_ca_bundle):
        _fail(parser, "--upstream-ca-bundle", f"{args.upstream_ca_bundle!r} is not a file")
    if args.base_url and not args.base_url.startswith(("https://", "http://")):
        _fail(parser, "--base-url", f"expected an http(s) URL, got {args.base_url!r}")
    try:
        agree = _bool(args.agree_to_terms)
    except argparse.ArgumentTypeError as error:
        _fail(parser, "--agree-to-terms", str(error))
    try:
        timeout = float(args.request_timeout)
        if timeout <= 0:
            raise ValueError
    except ValueError:
        _fail(parser, "--request-timeout", f"expected a positive number, got {args.request_timeout!r}")
    try:
        propagation = float(args.dns01_propagation_seconds)
        if propagation < 0:
            raise ValueError
    except ValueError:
        _fail(parser, "--dns01-propagation-seconds",
              f"expected a number of seconds, got {args.dns01_propagation_seconds!r}")
    preference = tuple(t.strip() for t in args.challenge_preference.split(",") if t.strip())
    if not preference or any(t not in ("http-01", "dns-01") for t in preference):
        _fail(parser, "--challenge-preference",
              f"expected a list of http-01 and dns-01, got {args.challenge_preference!r}")
    rfc2136 = None
    if args.dns01_rfc2136:
        from gateway.validation.dns01 import parse_host_port

        try:
            rfc2136 = parse_host_port(args.dns01_rfc2136)
        except ValueError as error:
            _fail(parser, "--dns01-rfc2136", str(error))
        if bool(args.dns01_rfc2136_key_name) != bool(args.dns01_rfc2136_key_secret):
            _fail(parser, "--dns01-rfc2136-key-secret",
                  "give both --dns01-rfc2136-key-name and --dns01-rfc2136-key-secret, or neither")
        if args.dns01_rfc2136_key_secret:
            import base64
            import binascii

            try:
                base64.b64decode(args.dns01_rfc2136_key_secret, validate=True)
            except (binascii.Error, ValueError):
                _fail(parser, "--dns01-rfc2136-key-secret", "expected base64")
    if args.unknown_keys == "managed" and not (args.http01_listen or args.dns01_hook or rfc2136):
        _fail(parser, "--unknown-keys",
              "managed mode validates every name itself: add --http01-listen, --dns01-hook "
              "or --dns01-rfc2136")
    state_dir = os.path.dirname(os.path.abspath(args.state))
    if not os.path.isdir(state_dir):
        _fail(parser, "--state", f"directory {state_dir!r} does not exist")
    return ServeConfig(
        upstream=args.upstream,
        keys=args.keys,
        upstream_ca_bundle=args.upstream_ca_bundle,
        state=args.state,
        listen=args.listen,
        base_url=args.base_url,
        agree_to_terms=agree,
        request_timeout=timeout,
        http01_listen=args.http01_listen,
        dns01_hook=args.dns01_hook,
        dns01_rfc2136=rfc2136,
        dns01_rfc2136_key_name=args.dns01_rfc2136_key_name,
        dns01_rfc2136_key_secret=args.dns01_rfc2136_key_secret,
        dns01_rfc2136_key_algorithm=args.dns01_rfc2136_key_algorithm,
        dns01_rfc2136_zone=args.dns01_rfc2136_zone,
        dns01_propagation_seconds=propagation,
        challenge_preference=preference,
        unknown_keys=args.unknown_keys,
        managed_keys=args.managed_keys,
    )


def run_serve(parser, args) -> int:
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from gateway import service
    from gateway.keystore import KeyStore, KeyStoreError

    config = serve_config(parser, args)
    try:
        keys = KeyStore.load(config.keys)
    except KeyStoreError as error:
        _fail(parser, "--keys", str(error))
    service.report_key_store(keys)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    outcome = {"code": 0}

    async def begin():
        try:
            running = await service.start(reactor, config, keys)
        except Exception as error:
            print(f"acme-gateway: cannot start: {error}", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()
            return
        host = running.port.getHost()
        scheme = "https" if config.listen.startswith("ssl:") else "http"
        base = config.base_url or f"{scheme}://{host.host}:{host.port}"
        print(f"acme-gateway: v1 directory at {base.rstrip('/')}/directory", file=sys.stderr, flush=True)
        reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.Deferred.fromCoroutine(running.stop()))

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(begin()))
    reactor.run()
    return outcome["code"]


def run_keys_list(parser, args) -> int:
    from gateway.keystore import KeyStore, KeyStoreError, format_listing

    try:
        keys = KeyStore.load(args.keys)
    except KeyStoreError as error:
        _fail(parser, "--keys", str(error))
    print(format_listing(keys))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(parser, args)
    if args.command == "demo":
        from gateway.demo import run_demo

        for flag, value in (("--port", args.port), ("--http01-port", args.http01_port)):
            if not str(value).isdigit() or not 0 < int(value) < 65536:
                _fail(parser, flag, f"expected a port number, got {value!r}")
        return run_demo(args.workdir, int(args.port), int(args.http01_port), args.certbot)
    if args.command == "keys" and args.keys_command == "list":
        return run_keys_list(parser, args)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
