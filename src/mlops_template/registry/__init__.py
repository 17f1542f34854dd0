"""The model registry (Unity Catalog on Databricks, SQLite locally): aliases, the gate, rollback.

Aliases: `challenger` is the latest trained version; `champion` the one the validation gate
promoted (what serving and batch scoring use); `previous_champion` the champion before it;
`rolled_back` a former champion that a rollback took `champion` away from.
"""
