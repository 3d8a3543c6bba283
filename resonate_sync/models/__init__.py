"""The models of the Resonate protocol and the converters that speak its JSON.

- :mod:`.entities`: what the server stores (``Promise``, ``Value``, ``Task``, ``Callback``,
  ``Schedule``, ``Lock``) and the state names.
- :mod:`.messages`: one request model per operation, and the responses.
- :mod:`.records`: the journal's records.
- :mod:`.fields`: how a field is declared: its wire rule and its value rule.
- :mod:`.convert`: the ``WIRE`` and ``STORE`` converters, built from those declarations.

Every name is importable from ``resonate_sync.models`` itself.
"""

from . import convert, entities, messages, records
from .convert import *  # noqa: F401,F403
from .convert import _FAST_REQUESTS  # noqa: F401  (tests compare the first pass with the detailed one)
from .entities import *  # noqa: F401,F403
from .fields import INT64_MAX, INT64_MIN, Base64, FieldError, StrMap, camel
from .messages import *  # noqa: F401,F403
from .records import *  # noqa: F401,F403

__all__ = [
    *entities.__all__,
    *messages.__all__,
    *records.__all__,
    *convert.__all__,
    "INT64_MIN",
    "INT64_MAX",
    "Base64",
    "StrMap",
    "FieldError",
    "camel",
]
