"""Reference data (accounts, API keys, domains, suppressions): plans, the read view every
service rebuilds from the log, the pure admin commands, and the admin HTTP API."""
