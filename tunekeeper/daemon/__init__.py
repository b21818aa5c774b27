"""The service: dispatcher, poller, canceller, purger and what wires them together."""
