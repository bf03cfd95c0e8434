"""`python -m schedgen.operator` == `schedgen-operator`."""

import sys

from .main import main

sys.exit(main())
