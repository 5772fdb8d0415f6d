"""Packet decoding: raw frames -> ``PACKET_DTYPE`` rows, and IP fragment association."""

from cloudtap.decode.config import DecodeConfig
from cloudtap.decode.decode import decode_counts, decode_frames
from cloudtap.decode.fragments import FragmentTracker

__all__ = ["DecodeConfig", "FragmentTracker", "decode_counts", "decode_frames"]
