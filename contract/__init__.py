"""The contracts between moerank's stages, defined once and torch-free.

training, export, service, loadtest and the pipelines all import these definitions; this
package imports nothing of theirs (numpy and pydantic only), so it installs with the serve
extras alone. One module per contract:

- schema: the dataset contract (one row per impression: the column names) and where the real
  data sets live
- manifest: the bundle's manifest.json (typed, versioned), written by export, read by service
- features: request field names, the out-of-vocabulary rule, the feature spec
- embeddings: the Redis key format and the item-embedding file format
- models_file: the service's models file (bundles, experiments, variants, shadows)
- served_log: the served log (answered requests and feedback events) that training reads back
"""
