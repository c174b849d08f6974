"""`nmdc-site`: what a site installs to take part in the NMDC Runtime: the typed API client and the agent.

The client is `nmdc_site.client`; the agent is the `nmdc-site` command (`nmdc_site.cli`).
"""

__version__ = "0.1.0"
