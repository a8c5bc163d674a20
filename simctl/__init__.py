"""simctl: the command line on the main PC (run, status, ping, monitor, results, local)."""
