"""What the harness needs from the host: devices and memory (`devices`), atomic files and locks (`files`)."""
