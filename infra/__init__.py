"""The real infrastructure around the service, started as local processes for tests and
benchmarks: a Redis Cluster (redis_cluster), HAProxy in front of replicas (haproxy). Each
needs its Debian package (redis-server, haproxy); `available()` says whether it is here."""
