"""
Where each setting of the command line comes from: the command line, the
environment, a config file, or the flag's default — in that order.

Containers are configured through ``ACME_GATEWAY_*`` variables, Kubernetes
often through a mounted ConfigMap file, and an operator at a shell through
flags; all three name the same settings the same way.  Every flag
``--some-flag`` is the variable ``ACME_GATEWAY_SOME_FLAG`` and the config
file key ``some-flag`` (``some_flag`` is accepted too).  The config file is
TOML (``--config FILE`` or ``ACME_GATEWAY_CONFIG``)::

    upstream = "https://acme-v02.api.letsencrypt.org/directory"
    keys = "/etc/acme-gateway/keys"
    admin-listen = "tcp:9180"
    log-format = "json"

Values from the environment and the file reach the command's checks as
text, exactly like a flag's, so a bad value fails at start-up with the same
message naming the flag — plus where the value came from.

A few settings are lists of tables no flag could spell, and live only in
the file (`TABLE_KEYS`): the per-client profile rules, ``[[profile-rule]]``.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import tomllib
from typing import Dict, List, Mapping, Optional, Sequence, Set

import attrs

ENV_PREFIX = "ACME_GATEWAY_"
CONFIG_FLAG = "--config"
#: Config file keys that hold an array of tables, not a flag's value.
TABLE_KEYS = ("profile-rule",)


class ConfigFileError(ValueError):
    """
    The config file cannot be read, is not TOML, or holds a value that no
    flag could take.
    """


def env_name(flag: str) -> str:
    """
    The environment variable of a ``--flag``.
    """
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def key_name(key: str) -> str:
    """
    The flag name (without dashes) a config file key stands for.
    """
    return key.strip().lstrip("-").lower().replace("_", "-")


def load_config_file(path: str) -> Dict[str, str]:
    """
    The settings in the TOML file at ``path``, keyed by flag name, as text.

    :raises ConfigFileError: naming the file (and the key) at fault.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise ConfigFileError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path} is not valid TOML: {error}") from None
    values: Dict[str, str] = {}
    for key, value in data.items():
        if key_name(key) in TABLE_KEYS:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise ConfigFileError(
                f"{path}: {key}: expected a string, number or boolean, got {type(value).__name__}"
            )
        values[key_name(key)] = text
    return values


def load_config_tables(path: str) -> Dict[str, List[Dict[str, object]]]:
    """
    The arrays of tables of the TOML file at ``path`` (`TABLE_KEYS`), keyed
    by name; each must be an array of tables (``[[profile-rule]]``).

    :raises ConfigFileError: naming the file and the key at fault.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise ConfigFileError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path} is not valid TOML: {error}") from None
    tables: Dict[str, List[Dict[str, object]]] = {}
    for key, value in data.items():
        name = key_name(key)
        if name not in TABLE_KEYS:
            continue
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise ConfigFileError(
                f"{path}: {key}: expected an array of tables ([[{name}]] sections)")
        tables[name] = [dict(table) for table in value]
    return tables


def config_path(argv: Sequence[str], environ: Mapping[str, str]) -> Optional[str]:
    """
    The config file named by ``--config FILE`` (or ``--config=FILE``) in
    ``argv``, else by ``ACME_GATEWAY_CONFIG``, else `None`.  Found before
    the real parse, because the file supplies the parser's defaults.
    """
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == CONFIG_FLAG and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(CONFIG_FLAG + "="):
            return arg[len(CONFIG_FLAG) + 1:]
    return environ.get(env_name(CONFIG_FLAG)) or None


@attrs.define
class Layers:
    """
    The environment and config file a parser is built against, and where
    each flag's value came from.

    :ivar origins: flag → a description of where its value came from, for
        values that did not come from the command line.
    :ivar known: the names of every flag that consulted these layers, to
        reject config file keys that no flag has.
    """

    environ: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))
    file_values: Mapping[str, str] = attrs.field(factory=dict)
    file_path: Optional[str] = None
    #: The file's arrays of tables (`TABLE_KEYS`).
    file_tables: Mapping[str, List[Dict[str, object]]] = attrs.field(factory=dict)
    origins: Dict[str, str] = attrs.field(factory=dict)
    known: Set[str] = attrs.field(factory=set)

    def unknown_keys(self) -> list:
        """
        Config file keys that no flag has.
        """
        return sorted(set(self.file_values) - (self.known - {key_name(CONFIG_FLAG)}))


_current: contextvars.ContextVar[Optional[Layers]] = contextvars.ContextVar(
    "acme_gateway_config_layers", default=None
)


def use_layers(layers: Layers) -> Layers:
    """
    Make ``layers`` the ones parsers built from now on (in this context)
    read their defaults from.
    """
    _current.set(layers)
    return layers


def current_layers() -> Layers:
    layers = _current.get()
    if layers is None:
        layers = use_layers(Layers())
    return layers


def origin_of(flag: str) -> Optional[str]:
    """
    Where the value of ``flag`` came from when not from the command line:
    ``environment variable ACME_GATEWAY_X`` or ``x in FILE``.
    """
    return current_layers().origins.get(flag)


class LayeredOption(argparse.Action):
    """
    An option whose default comes from ``ACME_GATEWAY_<FLAG>``, else from
    the config file, else from its declared default.  Its help says which
    variable and key set it.
    """

    def __init__(self, option_strings, dest, required=False, default=None, **kwargs):
        layers = current_layers()
        flag = option_strings[-1]
        name = flag.lstrip("-")
        variable = env_name(flag)
        layers.known.add(name)
        if variable in layers.environ:
            default, required = layers.environ[variable], False
            layers.origins[flag] = f"environment variable {variable}"
        elif name in layers.file_values and flag != CONFIG_FLAG:
            default, required = layers.file_values[name], False
            layers.origins[flag] = f"{name} in {layers.file_path}"
        where = f"env: {variable}" if flag == CONFIG_FLAG else f"env: {variable}; config: {name}"
        kwargs["help"] = (kwargs.get("help") or "") + f" [{where}]"
        super().__init__(option_strings, dest, required=required, default=default, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        current_layers().origins.pop(self.option_strings[-1], None)
