"""The MLflow model registry as the platform uses it: versions, aliases, promotions and rollbacks.

A registered version's life: registered with the alias ``challenger`` (the seed's *Staging*),
moved to ``champion`` by a promotion that passed its checks (*Production*), tagged
``archived=true`` when a later champion replaces it (*Archived*). Every promotion, rollback
and refusal is a row in ``model_registry.deployments``.
"""

CHALLENGER = "challenger"
CHAMPION = "champion"
ARCHIVED_TAG = "archived"
