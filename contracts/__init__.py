"""Contracts shared by every Backworks service: the blueprint, the envelope, the names on the broker.

Everything that crosses a process boundary is a versioned pydantic model defined here; its JSON
Schema is generated into ``contracts/schemas/`` so a plugin in another language can be written
against it.
"""
