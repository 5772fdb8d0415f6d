"""The cloudtap agent: runs on each hypervisor, follows the VM interfaces, captures and meters their traffic.

``runner`` wires it together: ``config`` (typed settings), ``interfaces`` and ``libvirt`` (live VM
interface discovery over netlink and the VM behind each interface), ``identity`` (observation
points), ``worker`` (capture threads), ``guard`` and ``cgroup`` (resource limits), ``output`` and
``sinks`` (where records go), ``control`` (local status/metrics endpoint), ``warmup`` (kernel compile).
"""
