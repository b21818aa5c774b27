"""The status page: jobs, live progress, loss curves and timelines, in the browser (see app.py)."""
