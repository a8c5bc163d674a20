"""The shared harness is the package tests/support; its fixtures come from its plugin."""

import signal

pytest_plugins = ["tests.support.fixtures"]

# A test run started in the background (`nohup ... &` from a script) ignores SIGINT, and the
# programs the tests start would inherit that: the tests press Ctrl-C (SIGINT) on them as a
# user does, so they must start with its default, as from a terminal. A handler here is
# reset to the default in every child when it executes its program.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
