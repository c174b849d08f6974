"""The transactions of the runtime: every state change, for the API, the Dagster sensors and the CLI alike.

A service function is one transaction on the session it is given: it locks what it changes (through the
store), applies the pure rules of `nmdc_runtime.domain`, writes, and commits; on an error it rolls back,
keeping only the lease lapses it discovered (see `transactions.transaction`). Callers never commit or roll
back; reads may go to the store directly. The numbers the rules run on come in as a `Policy`, never from a
global.
"""
