"""The protocol shared by simctl and the worker agents (topics, messages, connections).

See ``docs/protocol.md``. Topic strings and payload schemas live only in
:mod:`simproto.protocol`; how clients reach the broker lives in :mod:`simproto.connection`.
"""

from simproto.protocol import *  # noqa: F403
from simproto.protocol import __all__ as __all__
