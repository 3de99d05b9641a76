"""Training callbacks: held-out success rate, the reward-hacking monitor, the sample logger.

Each one is a Lightning ``Callback`` named by ``class_path`` in a YAML bundle of the top-level
``callbacks/`` folder; a callback of one's own plugs in the same way (see ``callbacks/README.md``).
"""

from agentprm.callbacks.base import Periodic, log_metrics
from agentprm.callbacks.env_eval import EnvEvalCallback
from agentprm.callbacks.reward_hacking import RewardHackingMonitor
from agentprm.callbacks.sample_logger import SampleLogger

__all__ = ["EnvEvalCallback", "Periodic", "RewardHackingMonitor", "SampleLogger", "log_metrics"]
