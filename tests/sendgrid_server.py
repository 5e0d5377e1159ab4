"""A local SendGrid-compatible Mail Send server for tests and benchmarks, with fault injection.

    with FakeSendGrid() as server:
        transport = SendGridTransport(api_key=server.api_key, host=server.url, timeout=2)
        server.script([("status", 429, {"X-RateLimit-Reset": "1700000000"})])  # the next request gets a 429
        ...
        server.accepted      # request bodies answered 202, as dicts, in arrival order

`POST /v3/mail/send` is checked against SendGrid's published request schema (tests/data/sendgrid/
tsg_mail_v3.json, with `format: email` enforced) plus the limits the schema does not express (SOURCES.md
and the API docs): 1000 recipients per request, 10,000 bytes of substitutions and of custom_args per
personalization (sum of UTF-8 key and value bytes), reserved headers, CR/LF in headers, 30 MB,
reply_to xor reply_to_list, no duplicate address within a personalization, text/plain before text/html.
Valid: 202 with a random `X-Message-Id`; sandbox mode: 200, recorded in `sandboxed`. Invalid: 400 with
`{"errors": [{"message", "field", "help"}]}`.

Scheduled sends: `POST /v3/mail/batch` answers 201 with a new `batch_id`; a Mail Send body may carry
`send_at` (unix seconds, at most 72 hours ahead by `clock`) and a known `batch_id`; `POST
/v3/user/scheduled_sends {"batch_id", "status": "pause"|"cancel"}` is recorded in `stopped` (at most 10; `PATCH
…/{batch_id}` changes it, `DELETE …/{batch_id}` lifts it), and `delivered()` leaves out what a pause or a cancel
holds back (a body whose send_at was more than 10 minutes away when its batch was stopped).

Scripted actions, one per request, consumed in order before normal handling:
    ("status", code, headers)          answer with that status (and a SendGrid-shaped error body); a header
                                       value may be a function, called when the answer goes out
    ("status", code, headers, body)    ... with that body (a dict, sent as JSON)
    ("drop",)                          read the request, then close the connection without an answer
    ("stall", seconds)                 accept and record the batch, wait, then answer: a client with a
                                       shorter timeout gives up on a batch that WAS accepted
    ("accept_then_drop",)              accept and record the batch, then close without an answer
    ("pass",)                          handle this one normally (to script the requests after it)
`FakeSendGrid(faults=FaultRates(...), seed=1)` draws the same faults at random for reliability tests.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema

SCHEMA_FILE = Path(__file__).parent / "data" / "sendgrid" / "tsg_mail_v3.json"
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_RECIPIENTS = 1000
MAX_ARGS_BYTES = 10_000
HOLD_SECONDS = 72 * 3600  # send_at at most 72 hours ahead
CANCEL_NOTICE_SECONDS = 600  # a cancel stops a held batch up to 10 minutes before its send_at
MAX_STOPPED_BATCHES = 10  # batch ids paused or cancelled at once
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}


@dataclass(frozen=True)
class FaultRates:
    """Probability per request of each fault; the rest are handled normally."""

    rate_limit: float = 0.0  # 429 with X-RateLimit-Reset one second ahead
    server_error: float = 0.0  # 503
    drop: float = 0.0  # close without answering, batch NOT accepted
    stall: float = 0.0  # accept, then answer after stall_seconds
    accept_then_drop: float = 0.0  # accept, then close without answering
    stall_seconds: float = 5.0

    def draw(self, rng: random.Random) -> tuple | None:
        roll = rng.random()
        for action, rate in (
            (("status", 429, {"X-RateLimit-Reset": str(int(time.time()) + 1)}), self.rate_limit),
            (("status", 503, {}), self.server_error),
            (("drop",), self.drop),
            (("stall", self.stall_seconds), self.stall),
            (("accept_then_drop",), self.accept_then_drop),
        ):
            if roll < rate:
                return action
            roll -= rate
        return None


def load_request_schema(path: Path = SCHEMA_FILE) -> dict:
    """The POST /v3/mail/send request body schema, $refs inlined, quirks of the published file patched."""
    document = json.loads(path.read_text())
    operation = document["paths"]["/v3/mail/send"]["post"]
    body = _resolve(operation["requestBody"], document)
    schema = copy.deepcopy(body["content"]["application/json"]["schema"])
    # Published as "string"; the API takes (and our transport sends) an object of strings.
    schema["properties"]["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    return schema


def _resolve(node, document):
    if isinstance(node, list):
        return [_resolve(item, document) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **siblings}, document)
    node = {key: _resolve(value, document) for key, value in node.items()}
    if node.pop("nullable", False) and "type" in node:  # OpenAPI 3.0 spelling of "or null"
        node["type"] = [node["type"], "null"]
    return node


@functools.cache
def _validator() -> _Validator:
    return _Validator()  # one per process: the schema is large and immutable, the validator thread-safe


class _Validator:
    def __init__(self):
        schema = load_request_schema()
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        self._schema = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def errors(self, body) -> list[tuple[str, str | None]]:
        """(message, field) pairs, SendGrid style: field is a dotted path like personalizations.0.to.0.email."""
        found = []
        for error in self._schema.iter_errors(body):
            field = ".".join(str(p) for p in error.absolute_path) or None
            message = "Does not contain a valid address." if error.validator == "format" else error.message
            found.append((message, field))
        if found or not isinstance(body, dict):
            return found
        return _limit_errors(body)


def _limit_errors(body: dict) -> list[tuple[str, str | None]]:
    found = []
    personalizations = body["personalizations"]
    total = sum(len(p.get(kind, [])) for p in personalizations for kind in ("to", "cc", "bcc"))
    if total > MAX_RECIPIENTS:
        found.append((f"The personalizations block contains {total} recipients; the limit is 1000.",
                      "personalizations"))
    if "reply_to" in body and "reply_to_list" in body:
        found.append(("The reply_to and reply_to_list fields are mutually exclusive.", "reply_to"))
    found += _header_errors(body.get("headers", {}), "headers")
    top_args = body.get("custom_args", {})
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        found += _header_errors(p.get("headers", {}), f"{where}.headers")
        for name, values in (("substitutions", p.get("substitutions", {})),
                             ("custom_args", {**top_args, **p.get("custom_args", {})})):
            size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in values.items())
            if size > MAX_ARGS_BYTES:
                found.append((f"The {name} are {size} bytes; the limit is 10000 per personalization.",
                              f"{where}.{name}"))
        if not p["to"]:
            found.append(("The to array is required for all personalization objects, and must have at least "
                          "one email object with a valid email address.", f"{where}.to"))
        seen = set()
        for kind in ("to", "cc", "bcc"):
            for address in p.get(kind, []):
                email = address["email"].lower()
                if email in seen:
                    found.append(("Each email address in the personalization block should be unique between "
                                  f"to, cc, and bcc. We found the first duplicate instance of [{email}] in the "
                                  f"{where}.{kind} field.", f"{where}.{kind}"))
                seen.add(email)
        if "subject" not in body and "subject" not in p and "template_id" not in body:
            found.append(("The subject is required. You can set it at the message or personalization level.",
                          "subject"))
    types = [c["type"] for c in body.get("content", [])]
    if not types and "template_id" not in body:
        found.append(("Unless a valid template_id is provided, the content parameter is required.", "content"))
    for first, wanted in enumerate(t for t in ("text/plain", "text/html") if t in types):
        if types[first] != wanted:
            found.append(("If present, text/plain and text/html may only be provided in order, "
                          "first and second.", f"content.{first}.type"))
    return found


def _header_errors(headers: dict, where: str) -> list[tuple[str, str | None]]:
    found = []
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            found.append((f"The header {name} is reserved and cannot be set.", f"{where}.{name}"))
        if not isinstance(value, str):
            found.append(("Header values must be strings.", f"{where}.{name}"))
        elif any(c in name + value for c in "\r\n"):
            found.append(("Header names and values may not contain CR or LF.", f"{where}.{name}"))
    return found


def _fast_errors(body) -> list[tuple[str, str | None]]:
    """Benchmark mode: only what a send could plausibly get wrong at volume."""
    if not isinstance(body, dict) or not body.get("personalizations"):
        return [("The personalizations field is required.", "personalizations")]
    if len(body["personalizations"]) > MAX_RECIPIENTS:
        return [("The personalizations block contains more than 1000 recipients.", "personalizations")]
    return []


def error_body(*errors: tuple[str, str | None]) -> dict:
    return {"errors": [{"message": message, "field": field, "help": None} for message, field in errors]}


class FakeSendGrid:
    """A SendGrid Mail Send server on 127.0.0.1 (a free port), run in a daemon thread; a context manager."""

    def __init__(self, *, api_key: str = "SG.fake-test-key", faults: FaultRates | None = None,
                 seed: int | None = None, latency: float = 0.0, validate: bool = True, keep_bodies: bool = True,
                 host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        # validate=False (benchmarks): parse the JSON and check the recipient limit only; the schema check
        # costs more than everything our sender does per request. keep_bodies=False: count, do not keep.
        self.validate = validate
        self.keep_bodies = keep_bodies
        self.recipients = 0  # personalizations in accepted bodies
        self._address = (host, port)
        # Seconds each request takes, half before the batch is recorded and half after: a slow provider,
        # which leaves room for a test to kill the client on either side of the acceptance.
        self.latency = latency
        self.accepted: list[dict] = []  # bodies answered (or, when scripted, due) 202
        self.sandboxed: list[dict] = []  # bodies answered 200 (sandbox mode): validated, not sent
        self.message_ids: list[str] = []  # X-Message-Id of each accepted body, same order
        self.requests = 0  # every request, whatever its answer
        self.request_times: list[float] = []  # time.time() at which each request arrived, in order
        self._faults = faults
        self.batch_ids: list[str] = []  # from POST /v3/mail/batch, in order
        self.stopped: dict[str, tuple[str, float]] = {}  # batch id → ("pause" | "cancel", when), scheduled_sends
        self.clock = time.time  # the server's own clock, for send_at: a test may move it
        self._rng = random.Random(seed)
        self._script: list[tuple] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._validator = _validator()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, actions: list[tuple]) -> None:
        """Queue one-shot actions for the next requests (see the module docstring)."""
        with self._lock:
            self._script.extend(actions)

    def start(self) -> FakeSendGrid:
        self._server = _Server(self._address, _handler_for(self))
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-sendgrid", daemon=True
        ).start()  # a short poll interval: stop() returns within 50 ms
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_action(self) -> tuple | None:
        with self._lock:
            self.requests += 1
            self.request_times.append(time.time())
            if self._script:
                return self._script.pop(0)
            return self._faults.draw(self._rng) if self._faults else None

    # -- scheduled sends: send_at, batch ids, pause and cancel ------------------------------------------

    def _new_batch(self) -> str:
        with self._lock:
            batch_id = secrets.token_hex(16)
            self.batch_ids.append(batch_id)
            return batch_id

    def _stop_batch(self, body) -> tuple[int, dict, dict | None]:
        """POST /v3/user/scheduled_sends: {"batch_id", "status": "pause"|"cancel"}; 201 with the body."""
        if not isinstance(body, dict) or body.get("status") not in ("pause", "cancel"):
            return 400, {}, error_body(("status must be pause or cancel", "status"))
        with self._lock:
            if body.get("batch_id") not in self.batch_ids:
                return 400, {}, error_body(("invalid batch id", "batch_id"))
            if body["batch_id"] in self.stopped:
                return 400, {}, error_body(("batch id already has a status: update it instead", "batch_id"))
            if len(self.stopped) >= MAX_STOPPED_BATCHES:
                return 400, {}, error_body(("max limit reached of 10 paused or cancelled batches", "batch_id"))
            self.stopped[body["batch_id"]] = (body["status"], self.clock())
        return 201, {}, {"batch_id": body["batch_id"], "status": body["status"]}

    def _change_stop(self, batch_id: str, body) -> tuple[int, dict, dict | None]:
        """PATCH /v3/user/scheduled_sends/{batch_id} {"status"}: 204."""
        if not isinstance(body, dict) or body.get("status") not in ("pause", "cancel"):
            return 400, {}, error_body(("status must be pause or cancel", "status"))
        with self._lock:
            if batch_id not in self.stopped:
                return 404, {}, error_body(("batch id not found", "batch_id"))
            self.stopped[batch_id] = (body["status"], self.stopped[batch_id][1])
        return 204, {}, None

    def _release(self, batch_id: str) -> tuple[int, dict, dict | None]:
        """DELETE /v3/user/scheduled_sends/{batch_id}: the pause lifted; 204."""
        with self._lock:
            if batch_id not in self.stopped:
                return 404, {}, error_body(("batch id not found", "batch_id"))
            del self.stopped[batch_id]
        return 204, {}, None

    def _schedule_errors(self, body: dict) -> list[tuple[str, str | None]]:
        found = []
        send_at = body.get("send_at")
        if send_at is not None and send_at > self.clock() + HOLD_SECONDS:
            found.append(("The send_at parameter can't be more than 72 hours in the future.", "send_at"))
        if body.get("batch_id") is not None and body["batch_id"] not in self.batch_ids:
            found.append(("The batch_id is not valid.", "batch_id"))
        return found

    def delivered(self) -> list[dict]:
        """The accepted bodies that reach their recipients (as things stand): all but those a pause or a cancel
        holds back — a held batch whose send_at was still more than 10 minutes away when its batch id was stopped."""
        with self._lock:
            return [body for body in self.accepted if not self._dropped(body)]

    def _dropped(self, body: dict) -> bool:
        status, at = self.stopped.get(body.get("batch_id"), (None, None))
        return status is not None and body.get("send_at") is not None and body["send_at"] > at + CANCEL_NOTICE_SECONDS

    def _record(self, body: dict) -> tuple[int, str | None]:
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable", False)
        with self._lock:
            if sandbox:
                self.sandboxed.append(body)
                return 200, None
            message_id = secrets.token_urlsafe(16)
            self.recipients += len(body["personalizations"])
            if not self.keep_bodies:
                return 202, message_id
            self.accepted.append(body)
            self.message_ids.append(message_id)
            return 202, message_id


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) makes the late answer fail: expected, keep stderr quiet


def _handler_for(fake: FakeSendGrid):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                fake._next_action()
                while length > 0:  # drain it, so the client reads the 413 rather than a broken pipe
                    length -= len(self.rfile.read(min(length, 1 << 20))) or length
                return self._answer(413, {}, error_body(("Payload Too Large: the limit is 30 MB.", None)))
            raw = self.rfile.read(length)
            media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if raw and media != "application/json":  # as SendGrid answers (parameters such as charset are fine)
                fake._next_action()
                return self._answer(415, {}, error_body(("Content-Type should be application/json.", None)))
            if fake.latency:
                fake._stopping.wait(fake.latency / 2)
            action = fake._next_action()
            kind = action[0] if action else None
            if kind == "status":
                return self._answer(action[1], action[2], action[3] if len(action) > 3 else _default_body(action[1]))
            if kind == "drop":
                return self._drop()
            status, headers, body = self._handle(raw)
            if kind == "accept_then_drop" and status in (200, 202):
                return self._drop()
            if kind == "stall":
                fake._stopping.wait(action[1])
            if fake.latency:
                fake._stopping.wait(fake.latency / 2)
            self._answer(status, headers, body)

        def do_PATCH(self):
            self._scheduled_send(lambda batch_id, body: fake._change_stop(batch_id, body))

        def do_DELETE(self):
            self._scheduled_send(lambda batch_id, body: fake._release(batch_id))

        def _scheduled_send(self, handle) -> None:
            """PATCH and DELETE /v3/user/scheduled_sends/{batch_id}."""
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = fake._next_action()
            if action and action[0] == "status":
                return self._answer(action[1], action[2], action[3] if len(action) > 3 else _default_body(action[1]))
            prefix = "/v3/user/scheduled_sends/"
            if not self.path.startswith(prefix):
                return self._answer(404, {}, error_body(("Not Found", None)))
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._answer(401, {}, error_body(("The provided authorization grant is invalid", None)))
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self._answer(400, {}, error_body(("Bad Request: the body is not valid JSON.", None)))
            self._answer(*handle(self.path[len(prefix):], body))

        def _handle(self, raw: bytes) -> tuple[int, dict, dict | None]:
            path = self.path.split("?")[0]
            if path not in ("/v3/mail/send", "/v3/mail/batch", "/v3/user/scheduled_sends"):
                return 404, {}, error_body(("Not Found", None))
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return 401, {}, error_body(("The provided authorization grant is invalid, expired, or revoked",
                                            None))
            if path == "/v3/mail/batch":
                return 201, {}, {"batch_id": fake._new_batch()}
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {}, error_body(("Bad Request: the body is not valid JSON.", None))
            if path == "/v3/user/scheduled_sends":
                return fake._stop_batch(body)
            errors = fake._validator.errors(body) if fake.validate else _fast_errors(body)
            errors = errors or fake._schedule_errors(body)
            if errors:
                return 400, {}, error_body(*errors)
            status, message_id = fake._record(body)
            return status, ({"X-Message-Id": message_id} if message_id else {}), None

        def _answer(self, status: int, headers: dict, body: dict | None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value() if callable(value) else value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _drop(self) -> None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def _default_body(status: int) -> dict | None:
    if status < 400:
        return None
    if status == 429:
        return error_body(("too many requests", None))
    return error_body((f"simulated error {status}", None))


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.sendgrid_server --port 8025 --fast`: the server in its own process (benchmarks)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--api-key", default="SG.fake-test-key")
    parser.add_argument("--fast", action="store_true", help="skip the JSON schema check; keep no bodies")
    args = parser.parse_args(argv)
    server = FakeSendGrid(api_key=args.api_key, validate=not args.fast, keep_bodies=not args.fast, port=args.port)
    server.start()
    print(f"listening on {server.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()
    print(f"requests {server.requests} recipients {server.recipients}", flush=True)


if __name__ == "__main__":
    main()
