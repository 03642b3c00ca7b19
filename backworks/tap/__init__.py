"""Subscribers of the event stream (``BW_EVENTS``): the audit trail and the analytics, off the request path."""
