"""The policy engine: ``schema`` validates a policy's rules, ``facts`` reads a
use case once, ``checks`` evaluates every rule (reads only).
"""
