"""Beyond one machine, on Ray: distributed corpus embedding (Ray Data) and a sharded index served by
Ray actors. Ray is optional (``pip install 'unirag[ray]'``); nothing here imports it until used.

- :func:`unirag.distributed.embed.embed_store`: the vectors of a doc store, embedded by ``map_batches``
  over a pool of encoder actors (``build_index(..., ray=...)``, ``unirag index build --ray``).
- :func:`unirag.distributed.shards.split_index`: an index folder split into N shard folders by a stable
  hash of the passage id (``unirag index shard``).
- :class:`unirag.distributed.sharded.ShardedRetriever`: one actor per shard; search scatters to all
  shards and merges their top-k (the retriever verbs of ``DenseRetriever``).
"""
