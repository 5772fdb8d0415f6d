"""Traffic synthesiser: realistic east-west pcaps from a scenario, with ground truth."""

from cloudtap.synth.scenario import Scenario, builtin_scenario, load_scenario
from cloudtap.synth.writer import SynthResult, write_pcap

__all__ = ["Scenario", "SynthResult", "builtin_scenario", "load_scenario", "write_pcap"]
