"""Stand-in for google.colab.drive."""

import os


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    error = os.environ.get("FAKE_COLAB_MOUNT_ERROR")
    if error:
        raise ValueError(error)
    os.makedirs(os.path.join(mountpoint, "MyDrive"), exist_ok=True)
    print(f"Mounted at {mountpoint}")
