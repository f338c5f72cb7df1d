"""
The command line of adoption and key import::

    acme-gateway adopt certbot    --config-dir DIR          --gateway URL --keys DIR
    acme-gateway adopt dehydrated --basedir DIR [--config FILE] --gateway URL --keys DIR
    acme-gateway adopt acme.sh    --home DIR                --gateway URL --keys DIR
        [--dry-run] [--host NAME]          |  … --undo
    acme-gateway keys import PATH… --keys DIR [--dry-run] [--host NAME]

Everything is planned first and printed; ``--dry-run`` stops there.  The
exit status is 0 when everything was adopted (or undone), 1 when some file
had to be left untouched (the rest was still done), 2 for unusable
arguments (nothing was changed).
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import urlsplit, urlunsplit

from gateway.adopt import changes
from gateway.adopt.keyimport import KeyImporter, plan_key_import
from gateway.process.config import LayeredOption

#: Characters a gateway URL must not hold: it is written into shell and
#: configobj files, quoted as the file already quoted the old value.
_UNSAFE_URL = re.compile(r"""[\s"'$`\\#;&|<>()]""")

_CLIENTS = {
    "certbot": "certbot 0.x/1.x: accounts/ and renewal/*.conf of --config-dir",
    "dehydrated": "dehydrated: accounts/<base64(CA)>/ and the config file's CA=",
    "acme.sh": "acme.sh: ca/<server>/account.key and each <domain>/<domain>.conf's Le_API",
}


def gateway_url(text: str) -> tuple:
    """
    The gateway's v1 directory URL as clients must store it, and a note when
    ``/directory`` was added to a bare base URL.

    :raises changes.AdoptError: for anything but a plain http(s) URL.
    """
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or _UNSAFE_URL.search(text):
        raise changes.AdoptError(f"--gateway {text!r}: expected the gateway's http(s) directory URL, "
                                 f"such as http://127.0.0.1:4000/directory")
    if parsed.path in ("", "/"):
        url = urlunsplit(parsed._replace(path="/directory"))
        return url, f"--gateway has no path: using its directory URL {url}"
    return text, None


#: How each client's installation is named on the command line.
_LOCATIONS = {
    "certbot": "--config-dir DIR",
    "dehydrated": "(--basedir DIR [--config FILE] | --config FILE)",
    "acme.sh": "--home DIR",
}

ADOPT_EXIT_STATUS = (
    "Exit status: 0 when everything was adopted (or undone); 1 when some file had to be left "
    "untouched, each named on a 'problem:' line (everything else was still done; for --undo, "
    "the manifest keeps what was not undone); 2 for unusable arguments (nothing was changed)."
)


def _usage(name: str) -> str:
    """
    A client's usage on two lines: ``--gateway`` and ``--keys`` are
    required to adopt (``--keys`` may come from ``ACME_GATEWAY_KEYS``), and
    not used by ``--undo``, which argparse cannot express by itself.
    """
    where = _LOCATIONS[name]
    return (f"acme-gateway adopt {name} {where} --gateway URL --keys DIR [--host NAME] [--dry-run]\n"
            f"       acme-gateway adopt {name} {where} --undo")


def add_adopt_command(commands) -> None:
    """
    ``adopt`` and its three clients.
    """
    adopt = commands.add_parser(
        "adopt", help="move a legacy client installation onto the gateway",
        description="Import a legacy client's account keys into the key store, give the client "
                    "its existing account under the gateway's URL, and point its stored server "
                    "URLs at the gateway. Every edited file is backed up (*.acme-gateway-backup) "
                    "and --undo restores it.",
        epilog=ADOPT_EXIT_STATUS)
    clients = adopt.add_subparsers(dest="client", required=True, metavar="CLIENT")
    for name, help_text in _CLIENTS.items():
        client = clients.add_parser(name, help=help_text, description=f"Adopt {help_text}.",
                                    usage=_usage(name), epilog=ADOPT_EXIT_STATUS)
        if name == "certbot":
            client.add_argument("--config-dir", required=True, metavar="DIR",
                                help="certbot's configuration directory (e.g. /etc/letsencrypt)")
        elif name == "dehydrated":
            client.add_argument("--basedir", metavar="DIR",
                                help="dehydrated's BASEDIR (default: the config's BASEDIR)")
            client.add_argument("--config", dest="client_config", metavar="FILE",
                                help="dehydrated's config file (default: BASEDIR/config)")
        else:
            client.add_argument("--home", required=True, metavar="DIR",
                                help="acme.sh's home directory (e.g. ~/.acme.sh)")
        client.add_argument("--gateway", metavar="URL",
                            help="the gateway's v1 directory URL, as the client will reach it "
                                 "(required, except with --undo)")
        _add_store_flags(client, "required, except with --undo")
        client.add_argument("--state", action=LayeredOption, metavar="FILE",
                            help="the gateway's SQLite state file: the certificates the client "
                                 "holds are added to its renewal inventory, so that their first "
                                 "renewal is one order carrying ARI replaces (without --state "
                                 "they are only listed; --undo leaves the inventory as it is)")
        client.add_argument("--undo", action="store_true",
                            help="restore the backups of an earlier adoption and remove what it "
                                 "created (imported keys stay in the key store)")


def _add_store_flags(parser, required: str = "required") -> None:
    parser.add_argument("--keys", action=LayeredOption, metavar="DIR",
                        help=f"the gateway's key store directory (created, mode 0700, if "
                             f"missing; {required})")
    parser.add_argument("--host", metavar="NAME",
                        help="the machine name used in imported key file names "
                             "(default: this machine's host name)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every change and make none")


def add_import_command(key_commands) -> None:
    """
    ``keys import``.
    """
    importing = key_commands.add_parser(
        "import", help="copy private keys from anywhere into the key store (mode 0600)",
        description="Copy every account private key found in PATHs (files, or directories "
                    "searched recursively) into the key store, named "
                    "imported-<host>-<file>-<thumbprint>, skipping keys already there. "
                    "Restart the gateway afterwards: it loads keys at start-up.",
        epilog="Exit status: 0 when every key found was imported (or was there already); 1 when "
               "some file could not be used, each named on a 'problem:' line (the rest was still "
               "imported); 2 without --keys.")
    importing.add_argument("paths", nargs="+", metavar="PATH",
                           help="a private key file (PEM, or JWK JSON such as certbot's "
                                "private_key.json), or a directory searched recursively (certbot's "
                                "accounts/, dehydrated's accounts/, acme.sh's ca/)")
    _add_store_flags(importing)


def _finish(plan: changes.Plan, dry_run: bool) -> int:
    if not dry_run:
        changes.apply(plan)
    print(changes.describe(plan, dry_run), end="")
    return 1 if plan.problems else 0


def _error(message: str, parser=None) -> int:
    """
    Exit status 2 for unusable arguments, after the command's usage when
    the arguments themselves are incomplete.
    """
    if parser is not None:
        parser.print_usage(sys.stderr)
    print(f"acme-gateway: {message}", file=sys.stderr)
    return 2


def _root(args) -> str:
    """
    The installation root an ``--undo`` works on: the same one adoption
    used, so that the command adoption printed works with ``--undo``
    (dehydrated's ``--config FILE`` alone: the config's ``BASEDIR``).
    """
    from gateway.adopt.dehydrated import basedir_of

    if args.client == "certbot":
        return args.config_dir
    if args.client == "acme.sh":
        return args.home
    if args.basedir:
        return args.basedir
    if args.client_config:
        return basedir_of(args.client_config)
    raise changes.AdoptError("give --basedir or --config")


def run_adopt(args, parser=None) -> int:
    """
    ``acme-gateway adopt CLIENT …``.
    """
    from gateway.adopt.acmesh import plan_acmesh
    from gateway.adopt.certbot import plan_certbot
    from gateway.adopt.dehydrated import plan_dehydrated

    try:
        if args.undo:
            root = os.path.abspath(_root(args))
            lines = changes.undo(root, args.client)
            print(f"{args.client} installation {root}:")
            print("\n".join(lines))
            return 1 if any("problem:" in line for line in lines) else 0
        if not args.gateway:
            return _error("adopt: --gateway URL is required", parser)
        if not args.keys:
            return _error("adopt: --keys DIR is required (or ACME_GATEWAY_KEYS)", parser)
        gateway, note = gateway_url(args.gateway)
        importer = KeyImporter.for_store(args.keys, args.host)
        if args.client == "certbot":
            plan = plan_certbot(args.config_dir, gateway, importer)
        elif args.client == "dehydrated":
            plan = plan_dehydrated(args.basedir, args.client_config, gateway, importer)
        else:
            plan = plan_acmesh(args.home, gateway, importer)
    except changes.AdoptError as error:
        return _error(f"adopt {args.client}: {error}")
    if note:
        plan.notes.insert(0, note)
    status = _finish(plan, args.dry_run)
    lines = _adopt_certificates(plan, args.state, args.dry_run)
    if lines:
        print("\n".join(lines))
    return 1 if any(line.startswith("problem:") for line in lines) else status


def _adopt_certificates(plan: changes.Plan, state, dry_run: bool) -> list:
    """
    Add the certificates the client holds to the renewal inventory of the
    ``--state`` file (list them only for ``--dry-run`` or without
    ``--state``); the report lines.
    """
    from gateway.process.adopt_inventory import StoreError, record_certificates

    if not plan.certificates:
        return []
    if dry_run or not state:
        why = "--dry-run" if dry_run else "no --state FILE given"
        return [f"certificate {held.source}: not added to the renewal inventory ({why})"
                for held in plan.certificates]
    try:
        return record_certificates(state, plan.certificates)
    except (StoreError, OSError) as error:
        return [f"problem: --state {state}: {error}; no certificate added to the renewal inventory"]


def run_keys_import(args, parser=None) -> int:
    """
    ``acme-gateway keys import PATH…``.
    """
    if not args.keys:
        return _error("keys import: --keys DIR is required (or ACME_GATEWAY_KEYS)", parser)
    plan = plan_key_import(args.paths, args.keys, args.host)
    return _finish(plan, args.dry_run)
