"""The real kioskd with tests/slow_classifier.py's classifier, `$SLOW_CLASSIFIER_DELAY_S` late.

SLOW_CLASSIFIER_DELAY_S=3 python -m tests.slow_kioskd --config FILE [kioskd options]
"""

from __future__ import annotations

import os
import sys

from kiosk import service
from tests.slow_classifier import SlowClassifier

if __name__ == "__main__":
    delay_s = float(os.environ["SLOW_CLASSIFIER_DELAY_S"])

    class Slow(SlowClassifier):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, delay_s=delay_s, **kwargs)

    service.Classifier = Slow
    sys.exit(service.main())
