"""Property-based fuzzing of the OpenAI routes of the model server and the gateway.

`make fuzz` runs `tests.fuzz.campaign` for a few minutes against a real CPU
engine; tests/integration/test_fuzz_openai.py runs a short one in CI.
"""
