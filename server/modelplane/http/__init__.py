"""HTTP plumbing the model server and the gateway share: pure-ASGI helpers (`asgi`),
the OpenAI error envelope (`errors`), API-key auth (`auth`), OpenTelemetry request
spans (`tracing`), JSON logs (`logs`) and uvicorn under the program's own stop
signals (`server`)."""
