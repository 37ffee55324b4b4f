"""The scenario's test order: tests that stop a pipeline unit for long run after all the others.

A collector stopped for half a minute misses exchange data (trade ids and depth updates the store
then lacks), which test_pipeline.py's exactly-once comparison of the store must not see; molecule
runs the files in name order, so test_alerts.py's collector stop is moved to the end here.
"""

RUN_LAST = (
    "test_alerts.py::test_a_stopped_collector_alerts_the_operator_and_its_restart_resolves_it",
)


def pytest_collection_modifyitems(items):
    last = [item for item in items if item.nodeid.endswith(RUN_LAST)]
    items[:] = [item for item in items if item not in last] + last
