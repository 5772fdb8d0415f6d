"""The controller: agents register, heartbeat, receive versioned config and commands; policies in cloud terms.

One concept per module: ``db`` (SQLite state), ``auth`` (bootstrap tokens), ``identity`` (each agent's
credential and control key), ``control_url`` (which control URLs the server may ask), ``project_scope``
(what a project-bound operator may change), ``registry`` (agents), ``status``
(heartbeat reports and their history), ``overlay`` (typed config overlays), ``groups``, ``policy`` and
``compiler`` (policies -> per-agent capture selection), ``commands`` (long-poll queue), ``fleet`` (tops,
stale agents), ``diagnose`` ("why is there no data for VM X?"), ``service`` (the facade routes use).
Kept free of web-framework imports so the agent can import ``overlay``.
"""
