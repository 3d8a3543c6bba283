"""tox plugin of this project: ``tox -e sdk`` finds Python 3.12/3.13 where pyenv installed them.

pyenv's ``python3.12`` shim only works while 3.12 is among pyenv's active versions; a machine
whose global version is 3.11 has the interpreter but tox cannot see it. Interpreters under
``$PYENV_ROOT/versions`` are offered to tox's discovery (as ``--discover`` would), after any
given on the command line. Elsewhere this does nothing.
"""

import glob
import os

from tox.plugin import impl


@impl
def tox_add_core_config(core_conf, state):  # noqa: ARG001 - tox's hook signature
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.1[23].*", "bin", "python3.1[23]")))
    options = state.conf.options
    options.discover = [*(getattr(options, "discover", None) or []), *found]
