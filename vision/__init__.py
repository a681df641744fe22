"""Watus vision service: camera → YOLO detector → face attributes → the latest scene over HTTP.

`python -m vision` runs it (settings `WATUS_VISION_*`, port 8081). Importing the package loads nothing
heavy; models load in the app's lifespan (see `vision.app`).
"""
