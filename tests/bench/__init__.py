"""`make bench`: the real worker processes side by side with a raw aiokafka → asyncpg
consumer on the same embedded broker, database and events; posting → `alert-raised`
latency at a steady rate; the streaming loan import; each process's memory.

Only outside interfaces are used (REST, Kafka topics, SQL reads of the services' tables),
so the bench keeps measuring whatever the services do inside. Figures are printed with
their ratio to the issue's targets and never asserted: the machines are shared and noisy.
Sizes come from environment variables (`config.py`); `make bench-soak` runs the
1,000,000-posting memory soak instead.
"""
