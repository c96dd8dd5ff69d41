"""``mlops-workload metrics ...``: the services' Prometheus exporters (standard library only).

One small process runs next to each service (a second Pebble service, a second systemd unit)
and answers ``GET /metrics`` without auth, in Prometheus' text format: counters and gauges
only, never a user's data. What it reads is cheap and local (the service's own status pages,
the unit's storage, the jobs' folders); sizes that grow with the data are cached.
"""
