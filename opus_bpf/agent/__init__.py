"""The opus-bpf agent: keeps this host's processes patched and exports metrics (`serve`)."""

from opus_bpf.agent.core import Agent, serve

__all__ = ["Agent", "serve"]
