"""The model layer: the ``Model`` contract and the ``ModelRepository`` that holds models."""
