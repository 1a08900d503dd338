"""kan-service: formula discovery with Kolmogorov-Arnold Networks over HTTP.

Layout: config (Settings) -> db (engine, sessions) -> models (SQLAlchemy tables) -> schemas (pydantic I/O)
-> api (routers, dependencies) -> app (create_app); executors (how jobs reach workers) and worker
(what a worker does with a job) never import the API.
"""
