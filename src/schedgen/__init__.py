"""schedgen: University of Pretoria schedule PDFs to calendar events, on Kubernetes.

Shared code lives at this level (the ParseJob contract, errors, event model, database
schema, ICS export); the components are the subpackages `schedgen.runner`,
`schedgen.operator` and `schedgen.api`.
"""

__version__ = "0.1.0"
