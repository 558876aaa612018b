"""Observability: Prometheus metrics (`metrics`, `exposition`), worker metrics (`worker`), a job's own log
lines for the dashboard (`joblog`) and the operator's view of and actions on jobs (`ops`)."""
