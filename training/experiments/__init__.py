"""Paper experiments as commands writing results/<name>.json (and PNGs): `make reproduce`."""
