"""The side-by-side benchmark of cte1-mcp: ``python -m bench`` (or ``make bench``).

One job per module: ``stats`` (medians, percentiles, formatting), ``procs`` (spawning, ports,
peak RSS), ``machine`` (what ran it), ``mcpstdio`` (the server over stdio with its pid),
``simulator`` (the CT-e1 simulator as a separate process), ``download``, ``warm``, ``economy``
and ``startup`` (the four measurements), ``naive`` (what a user would write without us, run as
a subprocess) and ``report`` (targets, verdicts and the markdown file).
"""
