"""RPC signature version 1.0 (HMAC-SHA1), computed exactly as the SDK does it.

The canonical string is every request parameter except ``Signature`` (empty
values kept), sorted by name, each name and value percent-encoded per RFC 3986
(space as %20, ``*`` as %2A, ``~`` left alone), joined with ``&``. The string
to sign is ``METHOD&%2F&`` followed by that string encoded once more, and the
key is the AccessKeySecret followed by ``&``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote


def percent_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    items = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in items)
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    digest = hmac.new(
        (secret + "&").encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def signature_matches(method: str, params: Mapping[str, str], secret: str) -> bool:
    return hmac.compare_digest(sign(method, params, secret), params.get("Signature", ""))
