"""
What the v1 directory and terms show of the upstream CA: its ``meta``
(website, CAA identities, terms of service).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

from gateway.translate.context import Context
from gateway.translate.errors import flow


@attrs.frozen
class UpstreamMeta:
    """
    The upstream directory's ``meta``, and its terms of service URL (or
    ``data:`` URL), if it names one.
    """

    meta: Mapping[str, Any]
    terms_of_service: Optional[str]


async def upstream_meta(context: Context) -> UpstreamMeta:
    """
    The upstream directory's ``meta`` (fetched once, then cached by the
    upstream client).
    """
    directory = await context.upstream.directory()
    return UpstreamMeta(directory.meta, directory.terms_of_service)


upstream_meta = flow(upstream_meta)
