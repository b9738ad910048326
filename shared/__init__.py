"""Code shared by the gateway and the pipeline: settings, logging, events, bus, chain, DB."""
