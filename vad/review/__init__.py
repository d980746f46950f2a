"""The nightly review report: what was flagged, when, and what it looked like, as one HTML page.

`night` reads a night's results with SQL, `previews` cuts the flagged clips' frames from the source
videos (Ray Data tasks), `page` lays it out, `report` runs the three and logs the page to MLflow.
"""
