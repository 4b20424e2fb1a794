"""The MemoRAG brain: models, global memory, programs, retrieval, pipeline.

Pure library code: nothing here imports a queue, a worker or a server.
"""
