"""
The ``acme-gateway`` command.

    acme-gateway serve --upstream URL --keys DIR [--upstream-ca-bundle PEM]
                       [--state FILE] [--listen ENDPOINT] [--base-url URL]
                       [--admin-listen ENDPOINT] [--log-format text|json] …
    acme-gateway report [--json] [--state FILE] [--migrated-after DURATION]
    acme-gateway check [--state FILE]
    acme-gateway healthcheck [--ready] [--admin-listen ENDPOINT | --url URL]
    acme-gateway keys list --keys DIR
    acme-gateway keys import PATH… --keys DIR [--dry-run]
    acme-gateway adopt certbot|dehydrated|acme.sh … --gateway URL --keys DIR [--dry-run]
    acme-gateway adopt certbot|dehydrated|acme.sh … --undo

Every flag can also come from the environment as ``ACME_GATEWAY_<FLAG>``
(``--upstream-ca-bundle`` → ``ACME_GATEWAY_UPSTREAM_CA_BUNDLE``) and from a
TOML config file (``--config FILE``; key ``upstream-ca-bundle``); the
command line wins over the environment, which wins over the file
(`gateway.process.config`).  A bad value fails at start-up with a message naming
the flag and where its value came from.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Optional, Sequence

from gateway import __version__
from gateway.process.adopt_command import add_adopt_command, add_import_command, run_adopt, run_keys_import
from gateway.process.config import (  # noqa: F401 (ENV_PREFIX and env_name are re-exported)
    ENV_PREFIX,
    ConfigFileError,
    Layers,
    LayeredOption,
    config_path,
    env_name,
    load_config_file,
    load_config_tables,
    origin_of,
    use_layers,
)

#: Every option reads the environment and the config file (gateway.process.config).
_EnvDefault = LayeredOption

_LAYERS_EPILOG = (
    "Every flag can also be set as the environment variable ACME_GATEWAY_<FLAG> "
    "(--admin-listen: ACME_GATEWAY_ADMIN_LISTEN) or as a key of the TOML file given by "
    "--config (admin-listen = \"tcp:9180\"). The command line wins over the environment, "
    "which wins over the file."
)
_SOME_LAYERED_EPILOG = (
    "An option showing [env: …; config: …] can also be set by that environment variable or "
    "config file key; the command line wins over the environment, which wins over the file."
)


def _bool(text) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_allow_shared_key_files(parser) -> None:
    """
    ``--allow-shared-key-files``: the one way to load key files that their
    group or others may read (refused by default, gateway.keys.keystore).
    """
    parser.add_argument("--allow-shared-key-files", action=_EnvDefault, nargs="?", const="true",
                        default="false", metavar="BOOL",
                        help="load private key files that their group or others may access "
                             "(refused by default: chmod 600 them); for secret mounts that set "
                             "group permissions on purpose, such as a Kubernetes Secret with "
                             "defaultMode 0440 (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acme-gateway",
        description="Serve the ACME v1 API to legacy clients and translate it to an ACME v2 CA.",
    )
    parser.add_argument("--version", action="version", version=f"acme-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway",
                                description="Run the gateway's v1 face in front of an ACME v2 CA.",
                                epilog=_LAYERS_EPILOG)
    serve.add_argument("--upstream", action=_EnvDefault, required=True, metavar="URL",
                       help="the upstream ACME v2 directory URL; an answer that is not one (a "
                            "web page, a 404, a certificate not trusted) stops start-up, a CA "
                            "not reachable yet is asked again until it answers")
    serve.add_argument("--keys", action=_EnvDefault, required=True, metavar="DIR",
                       help="the key store: every private key file below DIR is loaded "
                            "(PEM PKCS#1/PKCS#8/SEC1, JWK JSON; client account trees welcome); "
                            "serve refuses to start without a usable key, unless "
                            "--unknown-keys managed")
    serve.add_argument("--upstream-ca-bundle", action=_EnvDefault, metavar="PEM",
                       help="PEM roots that verify the upstream's TLS (default: system trust)")
    serve.add_argument("--state", action=_EnvDefault, default="./acme-gateway.sqlite3", metavar="FILE",
                       help="the state: an SQLite database file, or "
                            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, which several "
                            "gateway processes and replicas share (default: %(default)s)")
    serve.add_argument("--state-password-file", action=_EnvDefault, metavar="FILE",
                       help="read the PostgreSQL password from the first line of FILE (else "
                            "from ACME_GATEWAY_STATE_PASSWORD, else from the URI); it is never "
                            "printed")
    serve.add_argument("--workers", action=_EnvDefault, default="1", metavar="N",
                       help="serve the listeners from N processes sharing their sockets and "
                            "the state (default: %(default)s)")
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
    serve.add_argument("--max-body", action=_EnvDefault, default="65536", metavar="BYTES",
                       help="the largest v1 request body accepted; larger ones are refused with "
                            "413 before they are read (default: %(default)s)")
    serve.add_argument("--max-connections", action=_EnvDefault, default="256", metavar="N",
                       help="connections each listener (v1, HTTP-01, admin) holds at once; one "
                            "more is answered 503 and closed (default: %(default)s)")
    serve.add_argument("--header-timeout", action=_EnvDefault, default="10", metavar="SECONDS",
                       help="a request's line and headers must arrive within this long of its "
                            "first byte, however they trickle in; else 408 and the connection "
                            "is closed (every listener) (default: %(default)s)")
    serve.add_argument("--idle-timeout", action=_EnvDefault, default="30", metavar="SECONDS",
                       help="how long a listener waits, in all, for a request to begin on a new "
                            "or kept-alive connection, and for a body once the headers are in; "
                            "bytes trickling in do not extend it (default: %(default)s)")
    _add_allow_shared_key_files(serve)
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
    revalidation.add_argument("--tls-sni-check-port", action=_EnvDefault, default="443",
                              metavar="PORT",
                              help="with a means above, v1 authorizations offer tls-sni-01 (for "
                                   "installers that answer nothing else): the gateway checks the "
                                   "client's answer on this port of the name, as Boulder did, "
                                   "then proves the name upstream itself (default: %(default)s)")
    revalidation.add_argument("--tls-sni-check-resolver", action=_EnvDefault, metavar="HOST:PORT",
                              help="the DNS server (an IP address and port) that resolves names "
                                   "for the tls-sni-01 check (default: the system resolver)")
    revalidation.add_argument("--unknown-keys", action=_EnvDefault, default="reject",
                              choices=("reject", "managed"),
                              help="reject: refuse clients whose key is not in the key store; "
                                   "managed: serve them with an upstream key the gateway creates "
                                   "and keeps, validating every name itself (default: %(default)s)")
    economy = serve.add_argument_group(
        "rate-limit economy", "The gateway counts its own spend of each upstream account's "
        "budget and answers 429 rateLimited itself before the CA would.")
    economy.add_argument("--order-limit", action=_EnvDefault, default="300", metavar="N",
                         help="new orders per account per --order-window (default: %(default)s)")
    economy.add_argument("--order-window", action=_EnvDefault, default="10800", metavar="SECONDS",
                         help="the sliding window of --order-limit (default: %(default)s, 3 hours)")
    economy.add_argument("--pending-authz-limit", action=_EnvDefault, default="300", metavar="N",
                         help="pending authorizations per account (default: %(default)s)")
    economy.add_argument("--abandoned-authz-after", action=_EnvDefault, default="3600",
                         metavar="SECONDS",
                         help="deactivate upstream a pending authorization no client finished "
                              "after this long; 0 never does (default: %(default)s)")
    economy.add_argument("--bad-nonce-retries", action=_EnvDefault, default="5", metavar="N",
                         help="re-sign an upstream request at most N times after badNonce "
                              "(default: %(default)s)")
    revalidation.add_argument("--allow-names", action=_EnvDefault, nargs="+", metavar="PATTERN",
                              help="the only names any account may get through the gateway: "
                                   "exact names and *.suffix patterns (*.example.com: every name "
                                   "below example.com); others are refused with unauthorized "
                                   "before any order. Required with --unknown-keys managed; in "
                                   "the environment or config file, separated by spaces or "
                                   "commas (default: any name)")
    revalidation.add_argument("--managed-keys", action=_EnvDefault, metavar="DIR",
                              help="where managed-mode upstream keys are kept "
                                   "(default: beside --state, <state>.managed-keys)")
    _add_ca_policy_flags(serve)
    _add_operations_flags(serve)

    demo = commands.add_parser(
        "demo", help="run a local demo: Pebble upstream, SQLite state, the gateway on loopback",
        description="Start Debian's Pebble as a local ACME v2 CA and the gateway in front of it, "
                    "all on 127.0.0.1, and print the certbot commands that get a certificate "
                    "through it and renew it. Ctrl-C stops it.")
    demo.add_argument("--workdir", action=_EnvDefault, default="./demo", metavar="DIR",
                      help="where the demo keeps its state, keys and logs; one running demo per "
                           "directory (default: %(default)s)")
    demo.add_argument("--port", action=_EnvDefault, default="4000", metavar="PORT",
                      help="the gateway's v1 port on 127.0.0.1 (default: %(default)s)")
    demo.add_argument("--http01-port", action=_EnvDefault, default="5002", metavar="PORT",
                      help="the port Pebble validates http-01 on (default: %(default)s)")
    demo.add_argument("--certbot", action=_EnvDefault, metavar="PATH",
                      help="the certbot 1.x executable to show in the printed commands "
                           "(default: certbot)")

    _add_report_command(commands)
    _add_check_command(commands)
    _add_migrate_state_command(commands)
    _add_healthcheck_command(commands)

    keys = commands.add_parser(
        "keys", help="list the key store's account keys, or import keys into it",
        description="The key store holds the legacy clients' account private keys, which the "
                    "gateway signs upstream with: list what it would load, or import keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    listing = key_commands.add_parser(
        "list", help="print each key's RFC 7638 thumbprint, type and file",
        description="Print what the gateway would load from the key store: each key's RFC 7638 "
                    "thumbprint, type and file, then every file it could not use and why.",
        epilog="Exit status: 0 when it lists at least one usable key; 1 when none is usable "
               "(serve would refuse to start, unless --unknown-keys managed); 2 when the "
               "directory cannot be read.")
    listing.add_argument("--keys", action=_EnvDefault, required=True, metavar="DIR",
                         help="the key store directory")
    _add_allow_shared_key_files(listing)
    add_import_command(key_commands)
    add_adopt_command(commands)
    return parser


def _add_admin_token_file(group) -> None:
    group.add_argument("--admin-token-file", action=_EnvDefault, metavar="FILE",
                       help="a file holding a secret token: every admin page but /healthz then "
                            "asks for it as 'Authorization: Bearer TOKEN' (401 otherwise); "
                            "healthcheck sends it (default: no token; keep the admin listener "
                            "on loopback)")


def _admin_token(parser, args) -> Optional[str]:
    """
    The token of ``--admin-token-file``: the file's text, stripped.

    :raises SystemExit: naming the flag, for a file that cannot be read or
        holds no token.
    """
    path = getattr(args, "admin_token_file", None)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as error:
        _fail(parser, "--admin-token-file", f"cannot read {path}: {error.strerror or error}")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        _fail(parser, "--admin-token-file",
              f"{path} holds no token (one line of printable characters without spaces)")
    return token


def _add_ca_policy_flags(serve) -> None:
    """
    What the gateway asks of the CA for its clients: the certificate
    profile, and External Account Binding of new accounts.
    """
    group = serve.add_argument_group(
        "CA policy", "What the gateway asks of the upstream CA on the clients' behalf: the "
        "certificate profile of each order, and External Account Binding of each new account.")
    group.add_argument("--profile", action=_EnvDefault, metavar="NAME",
                       help="the profile every order asks for (one of the CA's meta.profiles, "
                            "checked at start-up); [[profile-rule]] tables of the config file "
                            "choose per client, by thumbprint, user-agent or names "
                            "(default: none, the CA's default)")
    group.add_argument("--eab-kid", action=_EnvDefault, metavar="KID",
                       help="External Account Binding key id: every account the gateway "
                            "creates upstream is bound with it (CAs such as ZeroSSL, Google "
                            "Trust Services, SSL.com require one)")
    group.add_argument("--eab-hmac-key", action=_EnvDefault, metavar="BASE64URL",
                       help="the HMAC key of --eab-kid, base64url as the CA gave it (prefer the "
                            "environment variable or config file to the command line)")
    group.add_argument("--eab-file", action=_EnvDefault, metavar="FILE",
                       help="a TOML file giving account keys (by RFC 7638 thumbprint) their own "
                            "kid and hmac-key, for CAs whose keys bind one account only; wins "
                            "over --eab-kid for those keys")


def _add_operations_flags(serve) -> None:
    """
    The flags of running unattended: configuration file, admin listener,
    logs, and the migration report's notion of a client gone.
    """
    group = serve.add_argument_group(
        "operations", "Running unattended: the admin listener (health, readiness, metrics, "
        "the migration report), logs, configuration.")
    group.add_argument("--config", action=_EnvDefault, metavar="FILE",
                       help="a TOML file whose keys are flag names (upstream = \"…\"); "
                            "the environment and the command line override it")
    group.add_argument("--admin-listen", action=_EnvDefault, metavar="ENDPOINT",
                       help="Twisted server endpoint of the admin listener: /healthz, /readyz "
                            "(can serve; /readyz?upstream=1 also asks the CA), /metrics, /status "
                            "(e.g. tcp:9180:interface=127.0.0.1; default: no admin listener)")
    _add_admin_token_file(group)
    group.add_argument("--log-format", action=_EnvDefault, default="text", metavar="FORMAT",
                       help="text, or json for one JSON object per line (default: %(default)s)")
    group.add_argument("--log-level", action=_EnvDefault, default="info", metavar="LEVEL",
                       help="debug, info, warn or error (default: %(default)s)")
    group.add_argument("--migrated-after", action=_EnvDefault, default="90d", metavar="DURATION",
                       help="a legacy client silent for longer than this counts as migrated away "
                            "(90d, 36h, 600…; v1 clients call only when a renewal is due, about "
                            "every 60 days) (default: %(default)s)")
    group.add_argument("--ready-max-age", action=_EnvDefault, default="30", metavar="SECONDS",
                       help="how old the upstream directory's last answer may be before "
                            "/readyz?upstream=1 or a /metrics scrape asks the CA again "
                            "(default: %(default)s)")
    group.add_argument("--shutdown-grace", action=_EnvDefault, default="10", metavar="SECONDS",
                       help="on SIGTERM, wait this long for requests in flight "
                            "(default: %(default)s)")


def _add_report_command(commands) -> None:
    report = commands.add_parser(
        "report", help="print the migration report: which legacy clients still speak v1",
        description="Print every legacy client the gateway has served from its state file: one "
                    "per address, product and version (the User-Agent's first word) and account, "
                    "with its account thumbprints, names, first and last seen, successes and "
                    "failures, and each full User-Agent it used (certbot's names the subcommand "
                    "and flags). Safe while the gateway runs, which writes what it saw within a "
                    "second.",
        epilog=_SOME_LAYERED_EPILOG)
    report.add_argument("--state", action=_EnvDefault, default="./acme-gateway.sqlite3",
                        metavar="FILE", help="the gateway's state: SQLite file or PostgreSQL URI "
                                             "(password from ACME_GATEWAY_STATE_PASSWORD or the "
                                             "URI) (default: %(default)s)")
    report.add_argument("--migrated-after", action=_EnvDefault, default="90d", metavar="DURATION",
                        help="silence that counts as migrated away (default: %(default)s)")
    report.add_argument("--json", action="store_true", help="print JSON instead of text")
    report.add_argument("--config", action=_EnvDefault, metavar="FILE",
                        help="the gateway's TOML config file (for state and migrated-after)")


def _add_migrate_state_command(commands) -> None:
    move = commands.add_parser(
        "migrate-state", help="copy an SQLite state into PostgreSQL (for several replicas)",
        description="Copy every row of the gateway's SQLite state file into an empty "
                    "PostgreSQL database, in one transaction, keeping account ids (they are in "
                    "the v1 URLs clients stored) and the nonce key. Stop the gateway first; "
                    "start it (or its replicas) on the URI afterwards. Exit status 0 when "
                    "copied, 1 when it could not be (nothing is written then), 2 for unusable "
                    "arguments.",
        epilog=_SOME_LAYERED_EPILOG)
    move.add_argument("--from", dest="source", required=True, metavar="FILE",
                      help="the SQLite state file to copy")
    move.add_argument("--to", dest="target", required=True, metavar="URI",
                      help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, an empty database")
    move.add_argument("--state-password-file", action=_EnvDefault, metavar="FILE",
                      help="read the PostgreSQL password from the first line of FILE (else "
                           "from ACME_GATEWAY_STATE_PASSWORD, else from the URI)")


def run_migrate_state(parser, args) -> int:
    from gateway.store import StoreError, is_shared_state

    if not is_shared_state(args.target):
        _fail(parser, "--to", "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DB")
    if not os.path.isfile(args.source):
        _fail(parser, "--from", f"{args.source}: no such file")
    from gateway.store.postgresql import StateURI, connect as connect_postgresql, state_password
    from gateway.store.sqlite import connect as connect_sqlite
    from gateway.store.transfer import copy_state

    try:
        password = state_password(args.state_password_file, os.environ)
    except OSError as error:
        _fail(parser, "--state-password-file",
              f"{args.state_password_file}: cannot read it: {error.strerror or error}")
    try:
        uri = StateURI.parse(args.target, password)
    except ValueError as error:
        _fail(parser, "--to", str(error))
    try:
        source = connect_sqlite(args.source)
    except Exception as error:
        print(f"acme-gateway: cannot open {args.source}: {error}", file=sys.stderr)
        return 1
    try:
        target = connect_postgresql(uri)
        try:
            copied = copy_state(source, target)
        finally:
            target.close()
    except StoreError as error:
        print(f"acme-gateway: {uri.scrub(str(error))}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"acme-gateway: cannot copy into {uri.shown}: {uri.scrub(str(error))}",
              file=sys.stderr)
        return 1
    finally:
        source.close()
    counts = ", ".join(f"{n} {table}" for table, n in copied.items() if n)
    print(f"{args.source} -> {uri.shown}: copied ({counts or 'nothing'})")
    return 0


def _add_check_command(commands) -> None:
    check = commands.add_parser(
        "check", help="check the state file: SQLite integrity, and rows a crash left partial",
        description="Run SQLite's PRAGMA integrity_check on the gateway's state file, then the "
                    "gateway's own consistency check: pending authorizations without challenges, "
                    "pending or ready orders without their authorizations, newOrder requests "
                    "whose order was never stored, rows whose parent is missing. Prints what it "
                    "finds; exit status 0 when nothing, 1 otherwise (2: unusable arguments). "
                    "Reads only: safe beside a running gateway (which repairs such rows itself "
                    "from the CA at start-up and with each sweep).",
        epilog=_SOME_LAYERED_EPILOG)
    check.add_argument("--state", action=_EnvDefault, default="./acme-gateway.sqlite3",
                       metavar="FILE", help="the gateway's state: SQLite file or PostgreSQL URI "
                                            "(password from ACME_GATEWAY_STATE_PASSWORD or the "
                                            "URI) (default: %(default)s)")
    check.add_argument("--config", action=_EnvDefault, metavar="FILE",
                       help="the gateway's TOML config file (for state)")


def _add_healthcheck_command(commands) -> None:
    health = commands.add_parser(
        "healthcheck", help="exit 0 when the gateway's admin listener says it is healthy",
        description="Ask the admin listener of the gateway running beside this command "
                    "(/healthz, or /readyz with --ready); exit 0 on 200, 1 otherwise, 2 for "
                    "unusable arguments. Meant for a container HEALTHCHECK.",
        epilog=_SOME_LAYERED_EPILOG)
    health.add_argument("--admin-listen", action=_EnvDefault, metavar="ENDPOINT",
                        help="the gateway's admin endpoint, which the URL is derived from")
    health.add_argument("--url", metavar="URL", help="ask this URL instead")
    _add_admin_token_file(health)
    health.add_argument("--ready", action="store_true",
                        help="check /readyz (the gateway can serve: listening, state writable, "
                             "keys loaded; never the CA) instead of /healthz")
    health.add_argument("--timeout", default="5", metavar="SECONDS",
                        help="seconds to wait for an answer (default: %(default)s)")
    health.add_argument("--config", action=_EnvDefault, metavar="FILE",
                        help="the gateway's TOML config file (for admin-listen and admin-token-file)")


def _fail(parser: argparse.ArgumentParser, flag: str, message: str):
    origin = origin_of(flag)
    parser.error(f"{flag}{f' (from {origin})' if origin else ''}: {message}")


def _check_endpoint(parser, flag: str, description: str) -> None:
    """
    Fail at start-up, naming ``flag``, when ``description`` is not a Twisted
    server endpoint (parsing one does not listen).
    """
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as error:
        _fail(parser, flag, f"not a server endpoint such as tcp:4000:interface=127.0.0.1 "
                            f"({error or type(error).__name__}): {description!r}")


def _operations_config(parser, args) -> dict:
    """
    The checked values of the operations flags, as `ServeConfig` fields.
    """
    from gateway.operations.logs import FORMATS, LEVELS
    from gateway.operations.report import parse_duration

    _check_endpoint(parser, "--listen", args.listen)
    if args.admin_listen:
        _check_endpoint(parser, "--admin-listen", args.admin_listen)
    if args.log_format not in FORMATS:
        _fail(parser, "--log-format", f"expected one of {', '.join(FORMATS)}, got {args.log_format!r}")
    if args.log_level not in LEVELS:
        _fail(parser, "--log-level", f"expected one of {', '.join(LEVELS)}, got {args.log_level!r}")
    try:
        migrated_after = parse_duration(args.migrated_after)
    except ValueError as error:
        _fail(parser, "--migrated-after", str(error))
    try:
        ready_max_age = float(args.ready_max_age)
        if not ready_max_age >= 0:
            raise ValueError
    except ValueError:
        _fail(parser, "--ready-max-age", f"expected a number of seconds, got {args.ready_max_age!r}")
    return {
        "admin_listen": args.admin_listen,
        "admin_token": _admin_token(parser, args),
        "migrated_after": migrated_after,
        "ready_max_age": ready_max_age,
    }


def _ca_policy_config(parser, args) -> dict:
    """
    ``--profile`` with the config file's ``[[profile-rule]]`` tables, and
    the EAB flags, checked, as `ServeConfig` fields.
    """
    from gateway.process.config import current_layers
    from gateway.process.upstream_options import OptionError, account_bindings, profile_policy

    layers = current_layers()
    try:
        profiles = profile_policy(args.profile, layers.file_tables.get("profile-rule", ()))
        bindings = account_bindings(args.eab_kid, args.eab_hmac_key, args.eab_file)
    except OptionError as error:
        if error.flag.startswith("--"):
            _fail(parser, error.flag, str(error))
        parser.error(f"--config: {layers.file_path}: [[{error.flag}]] {error}")
    return {"profiles": profiles, "bindings": bindings}


def _number(parser, flag: str, text, minimum: float, integer: bool = False):
    try:
        value = int(text) if integer else float(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        kind = "an integer" if integer else "a number"
        _fail(parser, flag, f"expected {kind} >= {minimum:g}, got {text!r}")
    return value


def _positive(parser, flag: str, text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = 0.0
    if not value > 0:
        _fail(parser, flag, f"expected a positive number of seconds, got {text!r}")
    return value


def _economy_config(parser, args) -> dict:
    """
    The rate-limit, listener-limit and shutdown flags, checked.
    """
    from gateway.translate.budget import BudgetLimits

    abandoned = _number(parser, "--abandoned-authz-after", args.abandoned_authz_after, 0)
    return {
        "budget": BudgetLimits(
            orders=_number(parser, "--order-limit", args.order_limit, 1, integer=True),
            order_window=_number(parser, "--order-window", args.order_window, 1),
            pending_authorizations=_number(
                parser, "--pending-authz-limit", args.pending_authz_limit, 1, integer=True),
            abandoned_after=abandoned or None,
        ),
        "shutdown_grace": _number(parser, "--shutdown-grace", args.shutdown_grace, 0),
        "max_connections": _number(parser, "--max-connections", args.max_connections, 1,
                                   integer=True),
        "header_timeout": _positive(parser, "--header-timeout", args.header_timeout),
        "idle_timeout": _positive(parser, "--idle-timeout", args.idle_timeout),
        "bad_nonce_retries": _number(parser, "--bad-nonce-retries", args.bad_nonce_retries, 0,
                                     integer=True),
    }


def serve_config(parser, args):
    from gateway.process.wiring import ServeConfig

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
        max_body = int(args.max_body)
        if max_body <= 0:
            raise ValueError
    except ValueError:
        _fail(parser, "--max-body", f"expected a positive number of bytes, got {args.max_body!r}")
    try:
        allow_shared = _bool(args.allow_shared_key_files)
    except argparse.ArgumentTypeError as error:
        _fail(parser, "--allow-shared-key-files", str(error))
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
    from gateway.validation.tlssni01 import parse_check_port, parse_check_resolver

    try:
        tls_sni_port = parse_check_port(args.tls_sni_check_port)
    except ValueError as error:
        _fail(parser, "--tls-sni-check-port", str(error))
    tls_sni_resolver = None
    if args.tls_sni_check_resolver:
        try:
            tls_sni_resolver = parse_check_resolver(args.tls_sni_check_resolver)
        except ValueError as error:
            _fail(parser, "--tls-sni-check-resolver", str(error))
    if args.unknown_keys == "managed" and not (args.http01_listen or args.dns01_hook or rfc2136):
        _fail(parser, "--unknown-keys",
              "managed mode validates every name itself: add --http01-listen, --dns01-hook "
              "or --dns01-rfc2136")
    allow_names = _allow_names(parser, args)
    if args.unknown_keys == "managed" and not allow_names:
        _fail(parser, "--unknown-keys",
              "managed mode needs --allow-names PATTERN…: it serves any key that signs its "
              "request and validates every name itself, so without a names policy any client "
              "could get certificates for any name routed to the gateway, names other accounts "
              "hold included (give the exact names and *.suffix patterns it may issue for)")
    economy = _economy_config(parser, args)
    operations = _operations_config(parser, args)
    ca_policy = _ca_policy_config(parser, args)
    state, password = _state_config(parser, args)
    workers = _number(parser, "--workers", args.workers, 1, integer=True)
    if workers > 1:
        from gateway.process.workers import check_shareable

        for flag, value in (("--listen", args.listen), ("--admin-listen", args.admin_listen),
                            ("--http01-listen", args.http01_listen)):
            if value:
                problem = check_shareable(value)
                if problem:
                    _fail(parser, flag, f"{value}: {problem}")
    return ServeConfig(
        upstream=args.upstream,
        keys=args.keys,
        upstream_ca_bundle=args.upstream_ca_bundle,
        state=state,
        state_password=password,
        workers=workers,
        listen=args.listen,
        base_url=args.base_url,
        agree_to_terms=agree,
        request_timeout=timeout,
        max_body=max_body,
        allow_shared_key_files=allow_shared,
        **operations,
        **economy,
        **ca_policy,
        http01_listen=args.http01_listen,
        dns01_hook=args.dns01_hook,
        dns01_rfc2136=rfc2136,
        dns01_rfc2136_key_name=args.dns01_rfc2136_key_name,
        dns01_rfc2136_key_secret=args.dns01_rfc2136_key_secret,
        dns01_rfc2136_key_algorithm=args.dns01_rfc2136_key_algorithm,
        dns01_rfc2136_zone=args.dns01_rfc2136_zone,
        dns01_propagation_seconds=propagation,
        challenge_preference=preference,
        tls_sni_check_port=tls_sni_port,
        tls_sni_check_resolver=tls_sni_resolver,
        unknown_keys=args.unknown_keys,
        managed_keys=args.managed_keys,
        allow_names=allow_names,
    )


def _allow_names(parser, args) -> tuple:
    """
    ``--allow-names``, checked and normalized: a list from the command line
    (or a config file's list), a string of patterns separated by spaces or
    commas from the environment or a config file.
    """
    from gateway.translate.policy import AllowedNames

    given = args.allow_names
    if not given:
        return ()
    if isinstance(given, str):
        given = [given]
    patterns = [p for item in given for p in str(item).replace(",", " ").split()]
    try:
        allowed = AllowedNames.parse(patterns)
    except ValueError as error:
        _fail(parser, "--allow-names", str(error))
    return allowed.patterns


def _state_config(parser, args):
    """
    The checked ``--state``: an SQLite file whose directory exists, or a
    PostgreSQL URI shown without its password, and the password apart.
    """
    from gateway.store import is_shared_state

    if is_shared_state(args.state):
        from gateway.store.postgresql import StateURI, state_password

        try:
            password = state_password(args.state_password_file, os.environ)
        except OSError as error:
            _fail(parser, "--state-password-file",
                  f"{args.state_password_file}: cannot read it: {error.strerror or error}")
        try:
            uri = StateURI.parse(args.state, password)
        except ValueError as error:
            _fail(parser, "--state", str(error))
        if args.unknown_keys == "managed" and not args.managed_keys:
            _fail(parser, "--managed-keys",
                  "give a directory for the managed keys: their default place is beside an "
                  "SQLite --state file (with several replicas, one all of them can read and "
                  "write)")
        return uri.shown, uri.password
    state_dir = os.path.dirname(os.path.abspath(args.state))
    if not os.path.isdir(state_dir):
        _fail(parser, "--state", f"{args.state}: its directory {state_dir} does not exist")
    if os.path.isdir(args.state):
        _fail(parser, "--state", f"{args.state} is a directory; give the database file's path")
    return args.state, None


def inherited_listeners(environ) -> tuple:
    """
    The listening sockets a ``--workers`` supervisor handed this process
    (`gateway.process.workers`), as ``((flag, fd), …)``; empty when it is
    not a worker.
    """
    from gateway.process.workers import LISTENERS_VARIABLE, parse_listeners

    return parse_listeners(environ.get(LISTENERS_VARIABLE, ""))


def run_serve(parser, args, argv=None) -> int:
    from gateway.keys.keystore import KeyStore, KeyStoreError
    from gateway.operations.logs import start_logging
    from gateway.process import serve

    config = serve_config(parser, args)
    json_logs = args.log_format == "json"
    try:
        keys = KeyStore.load(config.keys, allow_shared=config.allow_shared_key_files)
    except KeyStoreError as error:
        _fail(parser, "--keys", str(error))
    if json_logs:
        _log_key_store(keys)
    else:
        serve.report_key_store(keys)
    if not len(keys) and config.unknown_keys != "managed":
        unusable = f" ({len(keys.problems)} unusable file(s) listed above)" if keys.problems else ""
        _fail(parser, "--keys",
              f"no usable account key in {config.keys}{unusable}: the gateway would refuse every "
              f"client. Put the legacy clients' account keys there (acme-gateway adopt …, or "
              f"acme-gateway keys import PATH… --keys DIR), or serve clients whose keys it does "
              f"not hold with --unknown-keys managed")
    if config.workers > 1 and not inherited_listeners(os.environ):
        from gateway.process.workers import supervise

        return supervise(config, list(sys.argv[1:] if argv is None else argv),
                         json_logs)
    start_logging(args.log_format, args.log_level)
    inherited = inherited_listeners(os.environ)
    if inherited:
        import attrs

        config = attrs.evolve(config, inherited=inherited)

    async def main(reactor) -> None:
        from twisted.internet import defer

        stopping: defer.Deferred = defer.Deferred()

        def fatal(error) -> None:
            print(f"acme-gateway: stopping: {_start_error_text(error)}", file=sys.stderr, flush=True)
            stopping.errback(SystemExit(1))

        try:
            running = await serve.start(reactor, config, keys, on_fatal=fatal)
        except serve.StartCancelled:
            return  # SIGTERM while starting: the reactor is stopping already
        except Exception as error:
            text = _start_error_text(error) if isinstance(error, serve.StartError) else str(error)
            print(f"acme-gateway: cannot start: {text}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        serve.stop_at_shutdown(reactor, running)
        host = running.port.getHost()
        scheme = "https" if config.listen.startswith("ssl:") else "http"
        base = config.base_url or f"{scheme}://{_host_port(host)}"
        _say(json_logs, "v1 directory at {url}", url=f"{base.rstrip('/')}/directory")
        if running.admin_port is not None:
            admin = running.admin_port.getHost()
            _say(json_logs, "admin listener at {url} (healthz, readyz, metrics, status)",
                 url=f"http://{_host_port(admin)}/")
        # Serve until the process is told to stop (SIGTERM, Ctrl-C), or an
        # upstream that answers late shows it was the wrong one.
        await stopping

    return serve.run(main)


def _host_port(address) -> str:
    """
    ``host:port`` of a listening port's address (IPv4 or IPv6 TCP).
    """
    return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"


def _start_error_text(error) -> str:
    """
    A `gateway.process.serve.StartError` as the operator reads it: the flag, its
    value, where the value came from when not from the command line, and why.
    """
    origin = origin_of(error.flag)
    return f"{error.flag} {error.value}{f' (from {origin})' if origin else ''}: {error.reason}"


def run_keys_list(parser, args) -> int:
    from gateway.keys.keystore import KeyStore, KeyStoreError, format_listing

    try:
        allow_shared = _bool(args.allow_shared_key_files)
    except argparse.ArgumentTypeError as error:
        _fail(parser, "--allow-shared-key-files", str(error))
    try:
        keys = KeyStore.load(args.keys, allow_shared=allow_shared)
    except KeyStoreError as error:
        _fail(parser, "--keys", str(error))
    print(format_listing(keys))
    # A store that would refuse every client is a failure a script must see.
    return 0 if len(keys) else 1


def _say(json_logs: bool, message: str, **fields) -> None:
    """
    A start-up announcement: a plain ``acme-gateway: …`` line on stderr, or,
    when logs are JSON, a log event (a container log pipeline that expects
    JSON lines gets nothing else).
    """
    if json_logs:
        from twisted.logger import Logger

        # The same words as the text line, so that whatever waits for
        # "acme-gateway: v1 directory at URL" finds it in the JSON too.
        Logger(namespace="gateway.process.cli").info(f"acme-gateway: {message} (started)", **fields)
    else:
        print(f"acme-gateway: {message.format(**fields)}", file=sys.stderr, flush=True)


def _log_key_store(keys) -> None:
    """
    `gateway.process.serve.report_key_store` as log events: thumbprints and file
    names, never key material.
    """
    from twisted.logger import Logger

    log = Logger(namespace="gateway.keys.keystore")
    log.info("{count} account key(s) loaded from {directory}", count=len(keys),
             directory=keys.directory)
    for loaded in keys.loaded:
        log.info("key {thumbprint} {label} {path}", thumbprint=loaded.key.thumbprint,
                 label=loaded.key.label, path=loaded.path)
    for problem in keys.problems:
        log.error("unusable key file {path}: {reason}", path=problem.path, reason=problem.reason)
    for skipped in keys.skipped:
        log.info("skipped {path}: {reason}", path=skipped.path, reason=skipped.reason)


def run_report(parser, args) -> int:
    import json
    import time

    from gateway.operations.inventory import inventory
    from gateway.operations.report import OrphanedCertificate, build_report, parse_duration
    from gateway.store import StoreError, is_shared_state
    from gateway.store.sqlite import read_clients, read_inventory, read_orphaned_certificates

    try:
        migrated_after = parse_duration(args.migrated_after)
    except ValueError as error:
        _fail(parser, "--migrated-after", str(error))
    try:
        if is_shared_state(args.state):
            from gateway.store.postgresql import read_inventory_uri, read_report

            clients, orphaned = read_report(args.state, os.environ)
            held, windows, thumbprints = read_inventory_uri(args.state, os.environ)
        else:
            clients = read_clients(args.state)
            orphaned = read_orphaned_certificates(args.state)
            held, windows, thumbprints = read_inventory(args.state)
        orphans = [OrphanedCertificate.of(c, t) for c, t in orphaned]
    except (StoreError, ValueError) as error:
        _fail(parser, "--state", str(error))
    report = build_report(clients, time.time(), migrated_after, orphans,
                          inventory(held, windows, thumbprints))
    # The report is printable text (`gateway.operations.report.shown`); a
    # terminal whose encoding lacks a character still gets an escape.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.as_text(), end="")
    return 0


def run_check(parser, args) -> int:
    from gateway.store import StoreError, is_shared_state
    from gateway.store.sqlite import check_state

    try:
        if is_shared_state(args.state):
            from gateway.store.postgresql import check_uri

            result = check_uri(args.state, os.environ)
        else:
            result = check_state(args.state)
    except (StoreError, ValueError) as error:
        _fail(parser, "--state", str(error))
    if result.integrity != ("ok",):
        for line in result.integrity:
            print(f"integrity: {line}")
    for finding in result.findings:
        print(finding.describe())
    counts = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    if result.clean:
        print(f"{args.state}: ok ({counts})")
        return 0
    problems = len(result.findings) + (0 if result.integrity == ("ok",) else 1)
    print(f"{args.state}: {problems} problem{'s' if problems != 1 else ''} found ({counts})",
          file=sys.stderr)
    return 1


def run_healthcheck(parser, args) -> int:
    from gateway.operations.probe import probe, url_for_endpoint

    path = "/readyz" if args.ready else "/healthz"
    url = args.url
    if not url:
        if not args.admin_listen:
            _fail(parser, "--admin-listen", "give the gateway's admin endpoint (or --url)")
        try:
            url = url_for_endpoint(args.admin_listen, path)
        except ValueError as error:
            _fail(parser, "--admin-listen", str(error))
    try:
        timeout = float(args.timeout)
    except ValueError:
        _fail(parser, "--timeout", f"expected a number of seconds, got {args.timeout!r}")
    ok, text = probe(url, timeout, token=_admin_token(parser, args))
    print(text.rstrip("\n"), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def command_parser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    """
    The parser of a (sub)command, such as ``command_parser(parser, "keys",
    "list")``, so that its errors print its own usage, not the top level's.
    Names that are not commands stop the walk.
    """
    for name in names:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or name not in actions[0].choices:
            break
        parser = actions[0].choices[name]
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    layers = use_layers(Layers())
    # `adopt dehydrated --config FILE` names dehydrated's own config file,
    # never the gateway's TOML (which ACME_GATEWAY_CONFIG may still give).
    path = config_path(argv if argv[:1] != ["adopt"] else [], layers.environ)
    if path:
        try:
            layers.file_values = load_config_file(path)
            layers.file_tables = load_config_tables(path)
            layers.file_path = path
        except ConfigFileError as error:
            command_parser(build_parser(), *argv[:2]).error(f"--config: {error}")
    parser = build_parser()
    unknown = layers.unknown_keys()
    if unknown:
        command_parser(parser, *argv[:2]).error(
            f"--config: {path}: no flag is called {', '.join(unknown)} "
            f"(keys are flag names, such as admin-listen)")
    args = parser.parse_args(argv)
    own = command_parser(parser, args.command,
                         getattr(args, "keys_command", None) or getattr(args, "client", None) or "")
    if args.command == "serve":
        return run_serve(own, args, argv)
    if args.command == "report":
        return run_report(own, args)
    if args.command == "healthcheck":
        return run_healthcheck(own, args)
    if args.command == "check":
        return run_check(own, args)
    if args.command == "migrate-state":
        return run_migrate_state(own, args)
    if args.command == "demo":
        from gateway.process.demo import run_demo

        for flag, value in (("--port", args.port), ("--http01-port", args.http01_port)):
            if not str(value).isdigit() or not 0 < int(value) < 65536:
                _fail(own, flag, f"expected a port number, got {value!r}")
        return run_demo(args.workdir, int(args.port), int(args.http01_port), args.certbot)
    if args.command == "keys" and args.keys_command == "list":
        return run_keys_list(own, args)
    if args.command == "keys" and args.keys_command == "import":
        return run_keys_import(args, own)
    if args.command == "adopt":
        return run_adopt(args, own)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
