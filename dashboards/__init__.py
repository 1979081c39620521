"""The Dash class-health dashboard (``create_app`` / ``run`` in :mod:`dashboards.app`).

One concept per module:

- wiring: ``app`` (the Dash app, the thumbnail route), ``callbacks`` (URL <-> controls and page), ``ids`` (component ids);
- state and view: ``state`` (the URL state, pure), ``view`` (that state resolved against the data: queries);
- data: ``data`` (the cached reader), ``records`` (store documents as frames), ``cache`` (a small LRU),
  ``thumbnails``;
- maths on frames: ``pooling`` (pooled accuracy and Wilson intervals per day/week/month), ``status`` (verdicts now,
  ranking, changes);
- what is drawn: ``style``, ``components`` (widgets), ``figures`` (Plotly), ``shell`` (nav and filters),
  ``pages`` (one module per page, and the dispatch).
"""
