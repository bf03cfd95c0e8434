"""schedgen: University of Pretoria schedule PDFs to calendar events, on Kubernetes.

Shared code lives here (errors, event model, database schema, ICS export, logging);
the components live in `runner/` (schedgen.runner), `operator/controller/`
(schedgen.operator) and `api/` (schedgen.api).
"""

__version__ = "0.1.0"
