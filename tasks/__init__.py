"""Prefect tasks: thin wrappers over prmflow library calls (retries, cache policy, tags)."""
