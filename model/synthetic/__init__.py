"""The toy world: tiny MiniGPT-v2 models, synthetic shapes scenes and the recipe of the shipped shapes model.

Used by tests, benchmarks and the quick start to run the real pipeline offline; nothing in inference depends on it.
"""
