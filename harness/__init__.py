"""The harness: runs editors on models and datasets, computes metrics, writes reports and leaderboards."""
