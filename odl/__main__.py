import sys

from odl.cli.main import main

sys.exit(main())
