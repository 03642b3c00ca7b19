"""The HTTP edge: matches routes from the blueprint, publishes envelopes, returns assembled responses."""
