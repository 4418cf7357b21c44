"""The reliability suite: the core promises under faults, load and hostile input.

Each module proves one promise of the library against a real server on
127.0.0.1 (the simulator, or the hostile server in ``conftest``); none mocks
HTTP. ``docs/reliability.md`` states the guarantees and their limits.
"""
