"""PCAP retrieval: fetch stored packets from the agents, merge them by time into one pcapng."""

from cloudtap.server.pcap.errors import PcapAgentError, PcapError, PcapRequestError, PcapTooLarge
from cloudtap.server.pcap.merge import MergedCapture
from cloudtap.server.pcap.retrieval import PcapRequest, retrieve, retrieve_to_file
from cloudtap.server.pcap.targets import PcapTargets, StaticTargets, Target

__all__ = [
    "MergedCapture",
    "PcapAgentError",
    "PcapError",
    "PcapRequest",
    "PcapRequestError",
    "PcapTargets",
    "PcapTooLarge",
    "StaticTargets",
    "Target",
    "retrieve",
    "retrieve_to_file",
]
