"""The in-process Resonate state machine: no NATS, no JSON text."""

from .clock import Clock, FakeClock, SystemClock
from .common import CoreSettings, Result
from .resonate import OPERATIONS, Operation, Resonate
from .state import State
from .tasks import Delivery

__all__ = ["Clock", "FakeClock", "SystemClock", "CoreSettings", "Result", "Resonate", "Operation", "OPERATIONS", "State", "Delivery"]
