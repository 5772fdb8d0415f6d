"""`make demo`: the seed's incident, found end to end with real cloudtap processes on embedded defaults.

* :mod:`~cloudtap.demo.stack` starts a server (embedded chDB, static inventory) and an agent that replays
  a synthetic cloud's capture, ships records to the server, keeps packets and registers with the controller.
* :mod:`~cloudtap.demo.workflow` walks the troubleshooting workflow through the CLI and returns what each
  step found (the end-to-end test asserts on it).

Run as ``python -m cloudtap.demo [--scenario seed-case] [--out out/demo] [--keep-running]``.
"""
