"""The fault suite (`make faults`, `python -m tests.faults [scenario ...]`).

The six real processes (three uvicorn APIs, three workers) run under the supervisor of
`shared/devstack.py`, on the suite's own PostgreSQL (a fresh database per scenario) and a
broker of their own, while core banking (a raw aiokafka producer) posts 20,000 repayments
for 2,000 loans imported over REST, a fifth of them missed. Scenarios (`scenarios.py`):
worker-kills, db-restart, broker-restart, replica-pause, and `steady`, a control without
faults that is not run by default. The harness never restarts a service itself.

Afterwards (`run.py`, `evidence.py`), from the tables with read-only SQL: every posting
applied once in each consumer's inbox, one alert per missed posting and none on a paid one,
at most one open task per loan and method, every alert-raised applied by the scheduler; from
the broker and the logs: nothing dead-lettered; every process up and every API ready. After
a broker restart, the postings the new broker acknowledged must all be applied, and the
loss of what the old one held must be reported: `evidence.LOSS_IN_LOG` and
`evidence.LOSS_IN_READINESS` say how a worker's ERROR line and /readyz are recognised;
adapt them to the wording loss detection settles on.

Not collected by pytest (no test_*.py here): it takes minutes; `make test` leaves it out.
"""
