"""The one module that imports pynats2: our NATS client is built on its ``NATSClient``.

pynats2 imports ``pkg_resources`` for a single call; :func:`_ensure_pkg_resources` makes that
import work where setuptools no longer ships it, before pynats2 is imported.
"""

import importlib.metadata
import sys
import types
import warnings


def _ensure_pkg_resources() -> None:
    """Let ``import pynats2`` work where setuptools no longer ships ``pkg_resources``.

    pynats2 imports ``pkg_resources`` for a single call, ``get_distribution("pynats2").version``.
    Rather than pin an old setuptools, provide that one call from ``importlib.metadata``.
    Any failure counts, not only ImportError: an old setuptools on Python >= 3.12 dies with
    AttributeError (``pkgutil.ImpImporter``) while importing ``pkg_resources``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # setuptools warns that pkg_resources is deprecated
            import pkg_resources  # noqa: F401
    except Exception:
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "resonate_sync shim: only get_distribution(name).version, for pynats2."

        def get_distribution(name: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))

        shim.get_distribution = get_distribution  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


_ensure_pkg_resources()

import pynats2  # noqa: E402
from pynats2 import NATSConnectionError, NATSError, NATSRequestTimeoutError, NATSSubscription  # noqa: E402

NATSClient = pynats2.NATSClient

__all__ = ["NATSClient", "NATSConnectionError", "NATSError", "NATSRequestTimeoutError", "NATSSubscription"]
