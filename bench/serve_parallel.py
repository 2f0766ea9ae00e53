# exq serve --parallel: the greedy answers of 8 completion requests sent at once to servers with
# -np 2, 4 and 8 against those of -np 1 (one at a time) and of the same server one at a time, and
# the completion tokens per second of 8 requests of up to 256 tokens sent together (HTTP, host
# sampling and tokenization included). Writes OUT.json.
# Usage: python3 bench/serve_parallel.py EXQ MODEL OUT.json   (exq serve --device cuda, ports 18081-18090)
import json, subprocess, sys, threading, time, urllib.request

exq, model, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The ocean is",
           "In 1905, Einstein", "A recipe for bread:", "The best way to learn", "Mount Everest"]

def start(np, port):
    p = subprocess.Popen([exq, "serve", "-m", model, "--device", "cuda", "--port", str(port), "-np", str(np),
                          "--ctx-size", "1024", "--max-tokens", "256"], stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return p
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("server did not start: " + p.stderr.read())

def post(port, prompt, n):
    body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0, "cache_prompt": False}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
    r = json.loads(urllib.request.urlopen(req, timeout=600).read())
    return r["choices"][0]["text"], r["usage"]["completion_tokens"]

def run_all(port, prompts, n):
    res = [None] * len(prompts)
    def one(i):
        res[i] = post(port, prompts[i], n)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    t0 = time.time()
    for t in ts: t.start()
    for t in ts: t.join()
    return res, time.time() - t0

result = {}
# one at a time: the reference answers, and tokens/s of 8 requests sent together
p = start(1, 18081)
want = [post(18081, q, 64)[0] for q in PROMPTS]
post(18081, PROMPTS[0], 8)
res, sec = run_all(18081, PROMPTS, 256)
result["np1"] = {"seconds": sec, "tokens": sum(r[1] for r in res), "tok_per_s": sum(r[1] for r in res) / sec}
p.terminate(); p.wait()
for np in (2, 4, 8):
    p = start(np, 18082 + np)
    port = 18082 + np
    alone = [post(port, q, 64)[0] for q in PROMPTS]
    got, _ = run_all(port, PROMPTS, 64)
    same = [g[0] == w for g, w in zip(got, want)]
    same_alone = [g[0] == a for g, a in zip(got, alone)]
    res, sec = run_all(port, PROMPTS, 256)
    result[f"np{np}"] = {"same_as_np1": same, "same_as_alone_on_this_server": same_alone,
                         "seconds": sec, "tokens": sum(r[1] for r in res),
                         "tok_per_s": sum(r[1] for r in res) / sec,
                         "first_differing": [(g[0][:80], w[:80]) for g, w in zip(got, want) if g[0] != w][:1]}
    p.terminate(); p.wait()
print(json.dumps(result, indent=1))
json.dump(result, open(out_path, "w"), indent=1)
