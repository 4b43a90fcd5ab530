"""`python -m advlab ...` (and `torchrun --nproc-per-node K -m advlab run CONFIG.yaml`): the CLI."""
import sys

from advlab.cli.main import main

sys.exit(main())
