"""Stand-in for google.colab.output."""

import os


def enable_custom_widget_manager():
    log = os.environ.get("FAKE_COLAB_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write("enable_custom_widget_manager\n")
