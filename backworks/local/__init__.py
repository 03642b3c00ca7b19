"""Running Backworks on this machine from a terminal: what the CLI (and the SDK's test helpers) use, no service.

``backworks.pipeline`` holds only what every service process runs. This package holds the rest: the embedded
nats-server (``embedded``), the supervisor behind ``backworks up`` (``supervisor``, ``up``), stopping processes
(``processes``), the local state directory (``state``), loopback ports (``ports``), a one-shot read of the live
replicas (``census``) and the AsyncAPI description of a blueprint (``asyncapi``).
"""
