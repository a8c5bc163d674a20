"""The agent on every worker machine: takes tasks from the broker and runs kernels."""
