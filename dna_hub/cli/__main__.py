import sys

from dna_hub.cli import main

sys.exit(main())
