"""The sensors, one module each: data resources become jobs (`data_resources`), executions and ended operations
show up in the UI (`executions`, `operations`), lapsed leases are reaped (`reaper`), and the queue's health is
recorded and checked (`health`). What they share (the tick's label, cursors read by a number the database hands
out, the summary text, committed events recorded on failure) is in `ticks`. They are wired in
`nmdc_runtime.definitions`; a new sensor is a new module here and one line there.

Why sensors that do the work in the tick, rather than sensors that request runs: making the jobs for a batch
of data resources is one SQL statement of a few milliseconds, while a Dagster run costs seconds of process
start-up on top of the daemon's 5-second sensor loop. The sensor therefore makes the jobs itself (set-based,
in batches, each batch its own transaction) and records what it made as runless materializations of the
external `jobs` asset (`SensorResult(asset_events=...)`): a job is claimable within one sensor loop of its
data resource's registration, and a burst of ten thousand registrations is a few statements, not ten
thousand runs.

Errors are never turned into "nothing new": a database outage raises, so the tick fails and the UI shows it.

What a tick shows. Dagster 1.13 gives a tick the status SUCCESS only when it requests runs; a tick that
records asset events, adds partitions or moves its cursor without requesting a run is SKIPPED, whatever it
did (`dagster._daemon.sensor`). So every tick here returns a skip reason that says what it did: "made 3 jobs
of stats for 3 data resources", "recorded 2 ended operations (1 failed, 1 succeeded)", "ended 1 lapsed
lease"; ticks with nothing to do say "idle: ..." and why. The UI shows that text on the tick's status tag
(hover) and in its details, and the GraphQL API as the tick's `skipReason`; the tick's logs repeat it.
"""
