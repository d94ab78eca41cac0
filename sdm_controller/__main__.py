"""``python -m sdm_controller <command>``: the same commands as the ROS executables."""

import sys

from sdm_controller.cli import main

sys.exit(main())
