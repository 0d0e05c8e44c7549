"""The OpenAPI document the fuzzer generates requests from: vLLM's own request models.

The engine validates requests with its pydantic models
(`ChatCompletionRequest`, `CompletionRequest`), so their JSON Schemas are
the real surface, every vLLM extension field included (structured outputs,
logit bias, token id lists, transfer params...). They are lifted into an
OpenAPI 3.1 document (their `$defs` become `components/schemas`), and the
fields that cost engine time are capped (`COST_CAPS`), as are arrays and
strings that have no bound, so a case takes milliseconds of generation, not
minutes: schemathesis's positive mode stays within the caps, its negative
mode breaks them (and every other rule) on purpose, and the campaign clamps
what would merely be slow (`tests.fuzz.campaign.clamp_cost`).
"""

from __future__ import annotations

from typing import Any, Final

# Top-level request fields that size the work, and their bounds for generated requests.
COST_CAPS: Final[dict[str, dict[str, Any]]] = {
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 8},
    "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 8},
    "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 8},
    "min_tokens": {"type": "integer", "minimum": 0, "maximum": 4},
    "n": {"type": "integer", "minimum": 1, "maximum": 2},
    "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 5},
    "prompt_logprobs": {"type": "integer", "minimum": 0, "maximum": 5},
}
MAX_ITEMS: Final = 4
MAX_LENGTH: Final = 200
ANY_RESPONSE: Final = {"default": {"description": "any answer; the campaign judges it"}}


def _bounded(node: Any) -> Any:
    """`node` with every array and string given an upper bound, recursively."""
    if isinstance(node, list):
        return [_bounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _bounded(value) for key, value in node.items()}
    if out.get("type") == "array" and "maxItems" not in out:
        out["maxItems"] = MAX_ITEMS
    if out.get("type") == "string" and "maxLength" not in out and "enum" not in out:
        out["maxLength"] = MAX_LENGTH
    return out


def _request_schema(
    model: Any, served_model: str, defs: dict[str, Any], *, non_empty: str
) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update({name: _bounded(d) for name, d in schema.pop("$defs", {}).items()})
    schema = _bounded(schema)
    properties = schema.setdefault("properties", {})
    for field, cap in COST_CAPS.items():
        if field in properties:
            properties[field] = {"anyOf": [cap, {"type": "null"}]}
    properties["model"] = {"type": "string", "enum": [served_model]}
    # Requests the engine would refuse at once for want of input stay few in positive
    # mode (negative mode sends them anyway): `non_empty` is required and not empty.
    field = properties[non_empty]
    for option in field.get("anyOf", [field]):
        if option.get("type") == "array":
            option["minItems"] = 1
        elif option.get("type") == "string":
            option["minLength"] = 1
    required = set(schema.get("required", [])) | {"model", non_empty}
    schema["required"] = sorted(required)
    return schema


def _responses_schema(served_model: str) -> dict[str, Any]:
    """The Responses API's main fields, written out: vLLM's `ResponsesRequest` lifts to
    some 300 definitions (every item type of OpenAI's), too many to generate from in a
    short campaign. Roles and item types are strings, not enums, so positive mode sends
    unknown ones too; `previous_response_id` and `background` are there to be refused."""
    text = {"type": "string", "maxLength": MAX_LENGTH}
    part = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["input_text", "input_image"]},
            "text": text,
            "image_url": text,
        },
    }
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "type": {"type": "string", "maxLength": 20},
            "role": {"type": "string", "maxLength": 20},
            "content": {"anyOf": [text, {"type": "array", "items": part, "maxItems": MAX_ITEMS}]},
        },
    }
    tool = {
        "type": "object",
        "required": ["type", "name"],
        "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "name": {"type": "string", "maxLength": 40},
            "parameters": {"type": "object"},
            "strict": {"type": "boolean"},
        },
    }
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "enum": [served_model]},
            "input": {"anyOf": [{**text, "minLength": 1},
                                {"type": "array", "items": message, "minItems": 1,
                                 "maxItems": MAX_ITEMS}]},
            "instructions": {"anyOf": [text, {"type": "null"}]},
            "max_output_tokens": {"anyOf": [COST_CAPS["max_output_tokens"], {"type": "null"}]},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "background": {"type": "boolean"},
            "previous_response_id": {"anyOf": [text, {"type": "null"}]},
            "tools": {"type": "array", "items": tool, "maxItems": MAX_ITEMS},
            "tool_choice": {"anyOf": [{"type": "string", "enum": ["auto", "none", "required"]},
                                      {"type": "object"}]},
            "metadata": {"type": "object"},
        },
    }  # fmt: skip


def openai_schema(served_model: str) -> dict[str, Any]:
    """OpenAPI 3.1 for POST /v1/chat/completions, /v1/completions, /v1/responses,
    /v1/embeddings and GET /v1/models, bodies as vLLM (this installed version) validates
    them (the Responses API's main fields: `_responses_schema`)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    defs: dict[str, Any] = {}
    chat = _request_schema(ChatCompletionRequest, served_model, defs, non_empty="messages")
    completion = _request_schema(CompletionRequest, served_model, defs, non_empty="prompt")
    # A chat model serves no embeddings: the answer must still be an OpenAI error.
    embeddings = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "enum": [served_model]},
            "input": {"anyOf": [{"type": "string", "maxLength": MAX_LENGTH},
                                {"type": "array", "items": {"type": "string"},
                                 "maxItems": MAX_ITEMS}]},
        },
    }  # fmt: skip

    def post(schema: dict[str, Any]) -> dict[str, Any]:
        body = {"required": True, "content": {"application/json": {"schema": schema}}}
        return {"post": {"requestBody": body, "responses": ANY_RESPONSE}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenAI routes of modelplane serve and gateway", "version": "1"},
        "paths": {
            "/v1/chat/completions": post(chat),
            "/v1/completions": post(completion),
            "/v1/responses": post(_responses_schema(served_model)),
            "/v1/embeddings": post(embeddings),
            "/v1/models": {"get": {"responses": ANY_RESPONSE}},
        },
        "components": {"schemas": defs},
    }
