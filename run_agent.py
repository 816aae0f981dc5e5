#!/usr/bin/env python
"""The command line from a checkout: ``python run_agent.py ...`` is ``cpc-rl ...`` (see ``cpc_rl.experiments.cli``)."""

import sys

from cpc_rl.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
