#!/usr/bin/env python3
"""The function the end-to-end tests run behind switchyard (standard library only).

Every request is appended as one JSON line to $TESTFN_LOG (pid, path, client port, headers,
body, and `active`: how many requests this process was handling when it came, itself included).
What it answers is chosen by the event data, a JSON object:

  {"n": 1}                                   200 with {"n": 1, "attempt": "<deliveryattempt>"}
  {"n": 1, "fail_until": 3}                  503 until deliveryattempt 3, then 200
  {"n": 1, "fail_rate": 0.2}                 503 on a random 20% of calls
  {"n": 1, "retry_after": 2}                 429 with Retry-After: 2 on attempt 1, then 200
  {"n": 1, "status": 400}                    that status
  {"n": 1, "sleep_ms": 300}                  sleeps, then 200
  {"n": 1, "crash_marker": "/tmp/x"}         first time (no marker file): creates it and
                                             exits the process mid-request
  {"n": 1, "garbage": true}                  200 with a body that is not JSON
  {"n": 1, "http_res": true}                 (azure-functions) Outputs.res with status 201
  {"n": 1, "close_mid": true}                starts a 200 answer, then closes the connection
  {"n": 1, "hang": true}                     never answers (sleeps an hour)
  {"n": 1, "huge_reply": 5000000}            200 with a JSON body of that many bytes
  {"n": 1, "reply_type": "text/html"}        200 with that content type and an HTML body
  {"n": 1, "unknown_output": true}           (azure-functions) Outputs naming an unknown output
  {"n": 1, "reply_subject": "../x"}          200 with ce-subject: ../x on the reply

In the azure-functions format (POST /<pipeline>) the event is Data.trigger and the answer is
{"Outputs": {"a": {...}, "b": "text n"}, "Logs": [...], "ReturnValue": {...}}.
"""
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = os.environ.get("TESTFN_LOG")
ACTIVE_LOCK = threading.Lock()
ACTIVE = 0


def record(entry):
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, Nagle's algorithm and delayed ACKs
    # hold every keep-alive answer back by about 40 ms.
    disable_nagle_algorithm = True

    def do_POST(self):
        global ACTIVE
        with ACTIVE_LOCK:
            ACTIVE += 1
            self.active = ACTIVE
        try:
            self.post()
        finally:
            with ACTIVE_LOCK:
                ACTIVE -= 1

    def post(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        record({
            "pid": os.getpid(),
            "path": self.path,
            "port": self.client_address[1],
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "t": time.time(),
            "active": self.active,
        })
        azure = self.path != "/"
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        if azure:
            event = (doc.get("Data") or {}).get("trigger")
            if isinstance(event, str):
                try:
                    event = json.loads(event)
                except ValueError:
                    event = {}
            attempt = (doc.get("Metadata") or {}).get("deliveryattempt", "1")
        else:
            event = doc
            attempt = headers.get("ce-deliveryattempt", "1")
        if isinstance(event, dict) and "Method" in event and "Body" in event:
            # The azure-functions shape of an HTTP request: the event is its body.
            try:
                event = json.loads(event["Body"] or "{}")
            except ValueError:
                event = {}
        if isinstance(event, list):
            event = event[0] if event else {}
        if not isinstance(event, dict):
            event = {}
        attempt = int(attempt)

        if "crash_marker" in event and not os.path.exists(event["crash_marker"]):
            open(event["crash_marker"], "w").close()
            os._exit(3)
        if event.get("hang"):
            time.sleep(3600)
        if event.get("close_mid"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"n\":")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if "huge_reply" in event:
            pad = "x" * int(event["huge_reply"])
            return self.answer(200, {"n": event.get("n"), "pad": pad})
        if "reply_type" in event:
            self.send_response(200)
            self.send_header("Content-Type", event["reply_type"])
            out = b"<html><body>not what you asked for</body></html>"
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if "reply_subject" in event:
            return self.answer(200, {"n": event.get("n")}, {"ce-subject": event["reply_subject"]})
        if azure and event.get("unknown_output"):
            return self.answer(200, {"Outputs": {"nope": {"n": event.get("n")}}, "ReturnValue": None})
        if "sleep_ms" in event:
            time.sleep(event["sleep_ms"] / 1000.0)
        if "fail_rate" in event and random.random() < event["fail_rate"]:
            return self.answer(503, {"error": "random failure"})
        if "fail_until" in event and attempt < event["fail_until"]:
            return self.answer(503, {"error": "not yet"})
        if "retry_after" in event and attempt == 1:
            return self.answer(429, {"error": "slow down"}, {"Retry-After": str(event["retry_after"])})
        if "status" in event:
            return self.answer(event["status"], {"error": "as asked"})
        if event.get("garbage"):
            return self.answer(200, None, raw=b"<<<this is not json>>>")
        n = event.get("n")
        if azure and event.get("http_res"):
            return self.answer(200, {
                "Outputs": {"res": {"statusCode": 201, "body": {"created": n},
                                    "headers": {"Content-Type": "application/json"}}},
                "ReturnValue": None,
            })
        if azure:
            return self.answer(200, {
                "Outputs": {"a": {"n": n, "to": "a"}, "b": f"text {n}"},
                "Logs": [f"handled n={n}"],
                "ReturnValue": {"n": n, "to": "return"},
            })
        return self.answer(200, {"n": n, "attempt": str(attempt)})

    def answer(self, status, obj, extra=None, raw=None):
        out = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("FUNCTIONS_CUSTOMHANDLER_PORT") or os.environ["PORT"])
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256  # the default backlog of 5 drops connections under load
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
