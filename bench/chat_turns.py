#!/usr/bin/env python3
"""Two chat turns against a running `exq serve` (or any OpenAI-compatible server), timed.

The first turn puts the first CHARS characters of TEXTFILE in the system message and asks a
question; the second re-sends the conversation with the answer and a new question, as a chat
client does. Prints one JSON line: each turn's wall time and the server's usage (with
prompt_tokens_details.cached_tokens: the prompt tokens the prompt cache kept).

usage: chat_turns.py PORT TEXTFILE CHARS
"""
import json
import sys
import time
import urllib.request


def post(port, messages):
    body = json.dumps({"messages": messages, "max_tokens": 16, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req) as res:
        reply = json.load(res)
    return time.time() - t0, reply


def main():
    port, path, chars = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with open(path, encoding="utf-8") as f:
        text = f.read()[:chars]
    messages = [{"role": "system", "content": "Answer from this text:\n" + text},
                {"role": "user", "content": "What is it about?"}]
    t1, r1 = post(port, messages)
    messages += [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                 {"role": "user", "content": "Say more."}]
    t2, r2 = post(port, messages)
    print(json.dumps({"turn1_s": round(t1, 3), "turn2_s": round(t2, 3),
                      "usage1": r1["usage"], "usage2": r2["usage"]}))


if __name__ == "__main__":
    main()
