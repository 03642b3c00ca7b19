"""The runtime every Backworks service shares: plugin contract, registry, stage host, broker plumbing."""
