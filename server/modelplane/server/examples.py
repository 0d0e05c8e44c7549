"""Ready-to-paste examples printed when the server (or `make run`) is up."""

from __future__ import annotations

import json


def usage_examples(base_url: str, model: str, *, needs_key: bool) -> str:
    key = "$MODELPLANE_API_KEY" if needs_key else "none"
    auth = f' -H "Authorization: Bearer {key}"' if needs_key else ""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        }
    )
    api_key = 'os.environ["MODELPLANE_API_KEY"]' if needs_key else '"none"'
    return f"""
Modelplane is serving {model!r} at {base_url}

  curl -s {base_url}/chat/completions -H "Content-Type: application/json"{auth} \\
    -d '{body}'

  python - <<'PY'
  import os
  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key={api_key})
  stream = client.chat.completions.create(
      model="{model}", stream=True,
      messages=[{{"role": "user", "content": "Write a haiku about Kubernetes."}}])
  for chunk in stream:
      print(chunk.choices[0].delta.content or "", end="", flush=True)
  print()
  PY
"""
