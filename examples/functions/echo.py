#!/usr/bin/env python3
"""An example function for switchyard, Python standard library only.

It speaks both formats switchyard can send:
- CloudEvents over HTTP (binary or structured mode, or a batch): answers with a JSON object
  that says what it received;
- the Azure Functions custom-handler protocol (POST /<pipeline>): answers with Outputs,
  Logs and ReturnValue.

switchyard starts it with `command:` and passes the port in FUNCTIONS_CUSTOMHANDLER_PORT.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so switchyard reuses connections
    # Headers and body are separate writes: without this, Nagle's algorithm and delayed ACKs
    # hold every keep-alive answer back by about 40 ms.
    disable_nagle_algorithm = True

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        if "Data" in body[:64].decode("utf-8", "replace") and ctype.startswith("application/json") and self.path != "/":
            reply = self.azure(json.loads(body))
        else:
            reply = self.cloudevents(body, ctype)
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def cloudevents(self, body, ctype):
        if ctype.startswith("application/cloudevents"):
            return {"echo": json.loads(body)}
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = body.decode("utf-8", "replace")
        return {
            "id": self.headers.get("ce-id"),
            "type": self.headers.get("ce-type"),
            "source": self.headers.get("ce-source"),
            "attempt": self.headers.get("ce-deliveryattempt"),
            "echo": data,
        }

    def azure(self, request):
        return {
            "Outputs": {},
            "Logs": [f"handled {self.path}"],
            "ReturnValue": {"echo": request.get("Data")},
        }

    def log_message(self, fmt, *args):
        sys.stderr.write("echo.py: " + (fmt % args) + "\n")


if __name__ == "__main__":
    port = int(os.environ.get("FUNCTIONS_CUSTOMHANDLER_PORT") or os.environ.get("PORT") or 7071)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256  # the default backlog of 5 drops connections under load
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()
