"""Signature V3 (``ACS3-HMAC-SHA256``, and ``ACS3-HMAC-SM3`` where hashlib has SM3), as the gateway checks it.

The canonical request is six lines joined by ``\\n``: the HTTP method, the path
(``/`` for RPC), the canonical query string, the canonical headers, the signed
header names and the hex digest of the body. The canonical query string is
every query parameter, name and value percent-encoded per RFC 3986 (space as
%20, ``*`` as %2A, ``~`` left alone), sorted by the encoded name and joined
with ``&`` (an empty value keeps its ``=``). The canonical headers are the
signed headers, lower-case ``name:value\\n`` each with the value trimmed (a
header sent more than once joins its values with ``,``), in name order; the
signed header names are the same names joined with ``;``.

The string to sign is the algorithm, ``\\n``, and the hex digest of the
canonical request. The signature is the lower-case hex HMAC of that string
keyed with the AccessKeySecret itself (no ``&`` appended, unlike 1.0). The
client sends it as ``Authorization: <algorithm> Credential=<AccessKeyId>,
SignedHeaders=<names>,Signature=<hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flannel_alivpc.emulator.signature import percent_encode

# Algorithm name -> hashlib digest name. SM3 is offered only where the local
# OpenSSL provides it.
DIGESTS = {"ACS3-HMAC-SHA256": "sha256"}
if "sm3" in hashlib.algorithms_available:
    DIGESTS["ACS3-HMAC-SM3"] = "sm3"

_AUTHORIZATION = re.compile(
    r"^(?P<algorithm>\S+) Credential=(?P<key_id>[^,\s]+),"
    r"SignedHeaders=(?P<signed>[^,\s]*),Signature=(?P<signature>\S+)$"
)


@dataclass(frozen=True)
class Authorization:
    """The parts of a V3 ``Authorization`` header."""

    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    """The header's parts, or None when it is not in the V3 form."""
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        return None
    names = tuple(name for name in match.group("signed").split(";") if name)
    return Authorization(match.group("algorithm"), match.group("key_id"), names, match.group("signature"))


def hex_digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(DIGESTS[algorithm], data).hexdigest()


def canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    encoded = sorted((percent_encode(name), percent_encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    payload_digest: str,
) -> str:
    """``headers`` maps lower-case names to every value received under that name."""
    names = sorted(name.lower() for name in signed_headers)
    lines = "".join(
        f"{name}:{','.join(sorted(value.strip() for value in headers.get(name, ())))}\n" for name in names
    )
    return "\n".join([method.upper(), path or "/", canonical_query(query), lines, ";".join(names), payload_digest])


def string_to_sign(algorithm: str, canonical: str) -> str:
    return f"{algorithm}\n{hex_digest(algorithm, canonical.encode())}"


def sign(algorithm: str, to_sign: str, secret: str) -> str:
    return hmac.new(secret.encode(), to_sign.encode(), DIGESTS[algorithm]).hexdigest()


def signature_matches(algorithm: str, to_sign: str, secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign(algorithm, to_sign, secret), signature)
