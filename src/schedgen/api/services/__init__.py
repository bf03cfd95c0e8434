"""What the API does, apart from HTTP: each module takes the `ApiContext` and plain
values and returns plain values (or raises `ApiError`); the routers (`..routers`) turn
requests into those calls and the results into responses.

    lookup     a tenant's job, from its ParseJob or its Postgres record; waiting for it
    events     the events of a Succeeded job
    joblog     a job's log: its run's summary and the ParseJob's Kubernetes Events
    listing    a tenant's jobs, newest first, one page at a time
    queue      the queue summary and its history
    uploads    an upload becomes an S3 object and a ParseJob (idempotency keys)
    erasure    a job erased: rows, ParseJob, S3 objects
    calendars  calendar parameters and iCalendar rendering
    feeds      calendar feeds (secret URLs)
    compat     the ScheduleGenerator web app's view of jobs and events
"""
