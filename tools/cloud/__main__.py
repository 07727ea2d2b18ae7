"""python -m tools.cloud: the cloud service's command line (tools/cloud/cli.py)."""
import sys

from tools.cloud.cli import main

sys.exit(main())
