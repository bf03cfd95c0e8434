"""The HTTP layer: paths, parameters, status codes and response shapes, one module per
area; each calls `..services` for the work. `app.create_app` includes them in this order.

    probes   /healthz, /readyz (the metrics have their own listener: main.py)
    uploads  POST /api/v1/uploads
    jobs     /api/v1/jobs: the list, a job's status, erasure, events, calendar
    queue    /api/v1/queue, /api/v1/queue/history
    web      the web page: / and /static/*
    feeds    /api/v1/jobs/{id}/feed, /api/v1/feeds[/{id}] and /feeds/{token}.ics
    compat   the ScheduleGenerator web app's routes (SCHEDGEN_API_COMPAT_ROUTES)
"""
