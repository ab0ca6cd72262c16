"""A local fake of the Vonage Voice API, faithful where Batchcalls depends on Vonage's behaviour.

- HTTPS on 127.0.0.1 with a self-signed certificate made at test time (`make_certificate`).
- Each request must carry the application's JWT (RS256, checked with the application's public
  key, `application_id` claim): else 401, as Vonage answers.
- `POST /v1/calls` records every request it reads (with its arrival time), and answers `201
  {uuid, status, direction, conversation_uuid}`; `429` when it would exceed its own
  calls-per-second limit (Vonage queues nothing); `400` for a body without `to`/`from`/`ncco`.
- `GET /v1/calls/{uuid}` answers the call's current state (what `poll` reads); `PUT` with
  `{"action": "hangup"}` ends a live call, with `{"action": "transfer", "destination": {"type":
  "ncco", "ncco": [...]}}` runs that NCCO instead of the rest of the call's (400 once it ended).
- The create's machine detection is checked as Vonage's reference has it: `machine_detection`
  `continue` or `hangup`; `advanced_machine_detection` `{"behavior": "continue" | "hangup",
  "mode": "default" | "detect" | "detect_beep", "beep_timeout": 45..120}` (400 otherwise).
- Each call's life is played back to its `event_url` as signed webhooks (HS256 JWT keyed with
  the signature secret, `payload_hash` the SHA-256 of the compact JSON body), in order:
  `started`, `ringing`, `answered`, then the NCCO runs (each `input` posts a signed result to
  its `eventUrl` and runs the NCCO that answers), then `completed`; or the endings below.

The number's last digit chooses the life, as in the simulator (with Vonage's own endings):

| digit | life |
|---|---|
| 1 | started, ringing, busy |
| 2 | started, ringing, timeout |
| 3 | started, failed (cannot_route) |
| 4 | busy on the number's first call, answered after |
| 5 | started, ringing, answered, machine, completed (machine_detection=hangup); with advanced machine detection `continue`: machine, the NCCO runs, machine with sub_state beep_start, the transfer PUT's NCCO runs, completed |
| 6 | started, rejected (declined) |
| 7 | started, ringing, unanswered (unavailable) |
| 8 | started, ringing, cancelled |
| other | answered, the NCCO runs, completed |

Knobs for fault tests: `drop_creates(n, placed)` (read the request, then close the connection
without answering, after creating the call or not), `throttle_creates(n)` (answer 429),
`silent` numbers (the call is created and then nothing is ever heard of it), `lost_events`
numbers (the call lives and ends but no status webhook is delivered: only `GET` tells).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- credentials made at test time ---------------------------------------------------------


@dataclass(frozen=True)
class Application:
    """A Vonage application as its owner holds it: id, RSA key pair, signature secret."""

    application_id: str
    private_key_pem: str  # PKCS#1 ("BEGIN RSA PRIVATE KEY"), as some Vonage dashboards hand it out
    public_key: rsa.RSAPublicKey
    signature_secret: str

    @property
    def private_key_env(self) -> str:
        """The key as one environment-variable line, newlines written as literal `\\n`."""
        return self.private_key_pem.strip().replace("\n", "\\n")


def make_application() -> Application:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return Application(str(uuidlib.uuid4()), pem, key.public_key(), "sig-" + uuidlib.uuid4().hex + uuidlib.uuid4().hex)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost): (certificate, key) PEM paths.
    The certificate is its own CA, so it serves as the client's CA bundle."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-vonage.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fake-vonage.crt", directory / "fake-vonage.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def sign_webhook(body: bytes, secret: str, application_id: str) -> str:
    """Vonage's signed-webhook JWT for `body`."""
    claims = {
        "iat": int(time.time()),
        "jti": str(uuidlib.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "application_id": application_id,
        "api_key": "fakekey",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def iso(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- what the fake records -----------------------------------------------------------------


@dataclass
class CreateRequest:
    """One `POST /v1/calls` the fake read, and what it did with it."""

    at: float  # when the request had been read (the fake's clock): what Vonage's limit counts
    answer: str  # created | throttled | unauthorized | invalid | dropped
    body: dict[str, Any] | None
    uuid: str | None = None

    @property
    def ids(self) -> tuple[str, int] | None:
        """Batchcalls' (call id, attempt), from the event_url it gave."""
        urls = (self.body or {}).get("event_url") or []
        if not urls:
            return None
        query = parse_qs(urlsplit(urls[0]).query)
        return query["call_id"][0], int(query["attempt"][0])

    @property
    def number(self) -> str:
        return str(((self.body or {}).get("to") or [{}])[0].get("number", ""))


@dataclass
class Webhook:
    """One webhook the fake sent, and the answer it got."""

    kind: str  # event | input
    url: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer: Any = None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class FakeCall:
    uuid: str
    conversation_uuid: str
    to: str
    from_: str
    event_url: str
    nccos: list[list[dict[str, Any]]]  # the NCCO of the create, then each one an input webhook answered
    status: str = "started"
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    hung_up: bool = False
    detection: dict[str, Any] = field(default_factory=dict)  # the create's machine-detection fields
    transfers: list[list[dict[str, Any]]] = field(default_factory=list)  # the NCCOs of transfer PUTs
    transferred: threading.Event = field(default_factory=threading.Event)

    @property
    def beep_detection(self) -> bool:
        """Advanced machine detection that goes on past a machine, listening for its beep."""
        amd = self.detection.get("advanced_machine_detection")
        return isinstance(amd, dict) and amd.get("behavior") == "continue" and amd.get("mode") != "detect"


# --- the server ----------------------------------------------------------------------------

_ENDINGS = {
    "1": ("busy", None, True),
    "2": ("timeout", None, True),
    "3": ("failed", "cannot_route", False),
    "6": ("rejected", "declined", False),
    "7": ("unanswered", "unavailable", True),
    "8": ("cancelled", None, True),
}


class FakeVonage:
    def __init__(
        self,
        application: Application,
        cert: Path,
        key: Path,
        cps: int = 3,
        ring_seconds: float = 0.2,
        action_seconds: float = 0.1,
    ) -> None:
        self.application = application
        self.cps = cps
        self.ring_seconds = ring_seconds
        self.action_seconds = action_seconds
        self.creates: list[CreateRequest] = []
        self.calls: dict[str, FakeCall] = {}
        self.webhooks: list[Webhook] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.silent: set[str] = set()  # phone numbers, with or without the +
        self.lost_events: set[str] = set()
        self.input_digits = "1"
        self.pressed: dict[str, str] = {}  # phone number (digits only) -> the keys its callee presses
        self.input_speech = "yes please"
        self._drops: list[bool] = []  # one entry per create to drop: True when the call is placed
        self._throttles = 0
        self._dialed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = _TLSServer(("127.0.0.1", 0), _handler_for(self), context)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        """What VONAGE_API_HOST is set to: the SDK builds https://{host}{path}."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    # -- knobs --------------------------------------------------------------------------------

    def drop_creates(self, count: int, placed: bool) -> None:
        """The next `count` creates are read and then their connection is closed without an
        answer; with `placed` the call is created (and lives) first."""
        with self._lock:
            self._drops.extend([placed] * count)

    def throttle_creates(self, count: int) -> None:
        """Answer the next `count` creates with 429, whatever the rate."""
        with self._lock:
            self._throttles += count

    # -- reading the record -------------------------------------------------------------------

    def creates_for(self, call_id: str) -> list[CreateRequest]:
        return [c for c in self.creates if c.ids is not None and c.ids[0] == call_id]

    def call_of(self, call_id: str, attempt: int) -> FakeCall | None:
        for create in self.creates:
            if create.ids == (call_id, attempt) and create.uuid:
                return self.calls.get(create.uuid)
        return None

    # -- requests -----------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            claims = jwt.decode(token.strip(), self.application.public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return False
        return bool(claims.get("application_id") == self.application.application_id)

    def create(self, body: dict[str, Any] | None, at: float) -> tuple[int, dict[str, Any] | None, bool]:
        """(status, answer body, drop the connection) for one create request."""
        with self._lock:
            record = CreateRequest(at, "created", body)
            self.creates.append(record)
            if (
                body is None
                or not body.get("to")
                or not body.get("from")
                or not (body.get("ncco") or body.get("answer_url"))
            ):
                record.answer = "invalid"
                return (
                    400,
                    {
                        "type": "https://developer.nexmo.com/api-errors#bad-request",
                        "title": "Bad Request",
                        "detail": "to, from and ncco are required",
                    },
                    False,
                )
            problem = _detection_problem(body)
            if problem:
                record.answer = "invalid"
                return 400, {"type": "https://developer.nexmo.com/api-errors#bad-request", "title": problem}, False
            drop = self._drops.pop(0) if self._drops else None
            if drop is False:
                record.answer = "dropped"
                return 0, None, True
            recent = [c for c in self.creates if c.answer == "created" and c is not record and at - c.at < 1.0]
            if drop is None and (self._throttles or len(recent) >= self.cps):
                self._throttles = max(0, self._throttles - 1)
                record.answer = "throttled"
                return (
                    429,
                    {
                        "type": "https://developer.nexmo.com/api-errors#throttled",
                        "title": "Too Many Requests",
                        "detail": "over the calls-per-second limit",
                    },
                    False,
                )
            call = FakeCall(
                str(uuidlib.uuid4()),
                "CON-" + str(uuidlib.uuid4()),
                record.number,
                str(body["from"].get("number", "")),
                body["event_url"][0],
                [body.get("ncco") or []],
                detection={k: body[k] for k in ("machine_detection", "advanced_machine_detection") if k in body},
            )
            record.uuid = call.uuid
            self.calls[call.uuid] = call
            self._dialed[call.to] += 1
            first = self._dialed[call.to] == 1
            if drop is True:
                record.answer = "dropped"
        threading.Thread(target=self._live, args=(call, first), daemon=True).start()
        answer = {
            "uuid": call.uuid,
            "status": "started",
            "direction": "outbound",
            "conversation_uuid": call.conversation_uuid,
        }
        return (201, answer, drop is True)

    def call_info(self, call: FakeCall) -> dict[str, Any]:
        info: dict[str, Any] = {
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "to": {"type": "phone", "number": call.to},
            "from": {"type": "phone", "number": call.from_},
            "status": call.status,
            "direction": "outbound",
            "network": "GB-FIXED",
            "start_time": iso(call.created_at),
            "_links": {"self": {"href": f"/v1/calls/{call.uuid}"}},
        }
        if call.ended_at is not None:
            duration = int(call.ended_at - call.answered_at) if call.answered_at else 0
            info.update(
                end_time=iso(call.ended_at),
                duration=str(duration),
                rate="0.00450000",
                price=f"{0.0045 * duration / 60:.8f}",
            )
        return info

    # -- a call's life ------------------------------------------------------------------------

    def _wait(self, seconds: float) -> bool:
        """Sleep; False when the fake is stopping or the call must stop."""
        return not self._stopping.wait(seconds)

    def _live(self, call: FakeCall, first: bool) -> None:
        if _listed(call.to, self.silent):
            return
        digit = call.to[-1]
        self._status(call, "started")
        ending = _ENDINGS.get(digit)
        if digit == "4" and first:
            ending = ("busy", None, True)
        if ending is not None:
            status, detail, rings = ending
            if rings and self._wait(self.ring_seconds / 2):
                self._status(call, "ringing")
            if self._wait(self.ring_seconds):
                self._end(call, status, detail)
            return
        if not self._wait(self.ring_seconds / 2):
            return
        self._status(call, "ringing")
        if not self._wait(self.ring_seconds):
            return
        call.answered_at = time.time()
        self._status(call, "answered")
        if digit == "5" and call.beep_detection:
            self._machine_beeps(call)
        elif digit == "5":
            self._wait(self.action_seconds)
            self._status(call, "machine", call_uuid=True)  # and Vonage hangs up (machine_detection=hangup)
        else:
            self._run(call, call.nccos[0])
        if not call.hung_up:
            self._end(call, "completed", None)

    def _machine_beeps(self, call: FakeCall) -> None:
        """A voicemail with advanced machine detection going on: the verdict, the greeting (over
        which Vonage would play the call's NCCO, asynchronous mode; not played here), the beep, and
        the NCCO a transfer gives (waited for a while)."""
        self._wait(self.action_seconds)
        self._status(call, "machine", call_uuid=True)
        self._wait(self.action_seconds)
        self._status(call, "machine", call_uuid=True, sub_state="beep_start")
        if call.transferred.wait(10) and not call.hung_up:
            self._run(call, call.transfers[-1])

    def _run(self, call: FakeCall, ncco: list[dict[str, Any]]) -> None:
        for action in ncco:
            if call.hung_up or not self._wait(self.action_seconds):
                return
            if action.get("action") == "input":
                answer = self._input(call, action)
                if isinstance(answer, list):
                    call.nccos.append(answer)
                    self._run(call, answer)  # the webhook's NCCO replaces the rest of this one
                return

    def _input(self, call: FakeCall, action: dict[str, Any]) -> Any:
        kinds = action.get("type") or []
        payload: dict[str, Any] = {
            "from": call.from_,
            "to": call.to,
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "timestamp": iso(time.time()),
        }
        if "dtmf" in kinds:
            digits = self.pressed.get(call.to.lstrip("+"), self.input_digits)
            payload["dtmf"] = {"digits": digits, "timed_out": False}
            if "speech" in kinds:
                payload["speech"] = {"error": "Speech overridden by DTMF"}
        else:
            payload["dtmf"] = {"digits": None, "timed_out": False}
            payload["speech"] = {
                "timeout_reason": "end_on_silence_timeout",
                "results": [
                    {"confidence": "0.9405097", "text": self.input_speech},
                    {"confidence": "0.51", "text": self.input_speech + "s"},
                ],
            }
        return self._post("input", action["eventUrl"][0], payload)

    def _status(
        self, call: FakeCall, status: str, detail: str | None = None, call_uuid: bool = False, sub_state: str = ""
    ) -> None:
        if status in ("started", "ringing", "answered", "completed"):
            call.status = status
        payload: dict[str, Any] = {
            "from": call.from_,
            "to": call.to,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "outbound",
            "timestamp": iso(time.time()),
        }
        # The human/machine event names the call `call_uuid` (Vonage's webhook reference).
        payload["call_uuid" if call_uuid else "uuid"] = call.uuid
        if sub_state:
            payload["sub_state"] = sub_state
        if detail:
            payload["detail"] = detail
        if status == "completed":
            payload.update(self.call_info(call))
            payload.pop("_links", None)
            payload["to"], payload["from"] = call.to, call.from_
        if not _listed(call.to, self.lost_events):
            self._post("event", call.event_url, payload)

    def _end(self, call: FakeCall, status: str, detail: str | None) -> None:
        call.ended_at = time.time()
        call.status = status
        self._status(call, status, detail)

    def _post(self, kind: str, url: str, payload: dict[str, Any]) -> Any:
        body = compact(payload)
        headers = {
            "Authorization": "Bearer "
            + sign_webhook(body, self.application.signature_secret, self.application.application_id),
            "Content-Type": "application/json",
        }
        try:
            response = requests.post(url, data=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            self.webhooks.append(Webhook(kind, url, headers, body, 0, repr(exc)))
            return None
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = response.text
        self.webhooks.append(Webhook(kind, url, headers, body, response.status_code, answer))
        return answer

    def transfer(self, call: FakeCall, destination: object) -> int:
        """`PUT` `{"action": "transfer", "destination": {"type": "ncco", "ncco": [...]}}`."""
        if not isinstance(destination, dict) or destination.get("type") != "ncco":
            return 400
        ncco = destination.get("ncco")
        if not isinstance(ncco, list) or not all(isinstance(a, dict) and a.get("action") for a in ncco):
            return 400
        if call.ended_at is not None:
            return 400
        call.transfers.append(ncco)
        call.nccos.append(ncco)
        call.transferred.set()
        return 204

    def hangup(self, call: FakeCall) -> int:
        if call.ended_at is not None:
            return 400
        call.hung_up = True
        threading.Thread(target=self._end, args=(call, "completed", None), daemon=True).start()
        return 204


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, not in the accept loop.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def _handler_for(fake: FakeVonage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def _answer(self, status: int, body: Any = None) -> None:
            data = compact(body) if body is not None else b""
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            fake.requests.append((self.command, self.path, status))

        def _read(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _drop(self) -> None:
            """Close the connection without a byte of answer."""
            self.close_connection = True
            fake.requests.append((self.command, self.path, 0))
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)

        def _call(self) -> FakeCall | None:
            return fake.calls.get(self.path.rstrip("/").rsplit("/", 1)[-1])

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self._read()
            at = time.time()
            if self.path != "/v1/calls":
                return self._answer(404, {"title": "Not Found"})
            if not fake.authorized(self.headers.get("Authorization")):
                fake.creates.append(CreateRequest(at, "unauthorized", _json(raw)))
                return self._answer(
                    401,
                    {
                        "type": "https://developer.nexmo.com/api-errors#unauthorized",
                        "title": "Invalid credentials supplied",
                    },
                )
            status, body, drop = fake.create(_json(raw), at)
            if drop:
                return self._drop()
            self._answer(status, body)

        def do_GET(self) -> None:  # noqa: N802
            if not fake.authorized(self.headers.get("Authorization")):
                return self._answer(401, {"title": "Invalid credentials supplied"})
            call = self._call() if self.path.startswith("/v1/calls/") else None
            if call is None:
                return self._answer(404, {"title": "Not Found"})
            self._answer(200, fake.call_info(call))

        def do_PUT(self) -> None:  # noqa: N802
            body = _json(self._read()) or {}
            if not fake.authorized(self.headers.get("Authorization")):
                return self._answer(401, {"title": "Invalid credentials supplied"})
            call = self._call() if self.path.startswith("/v1/calls/") else None
            if call is None:
                return self._answer(404, {"title": "Not Found"})
            if body.get("action") == "transfer":
                return self._answer(fake.transfer(call, body.get("destination")))
            if body.get("action") != "hangup":
                return self._answer(400, {"title": "Bad Request"})
            self._answer(fake.hangup(call))

        def log_message(self, *args: object) -> None:
            pass

    return Handler


_AMD_CHOICES = {"behavior": ("continue", "hangup"), "mode": ("default", "detect", "detect_beep")}


def _detection_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a create's machine-detection fields, as Vonage's reference has them."""
    if "machine_detection" in body and body["machine_detection"] not in ("continue", "hangup"):
        return "machine_detection must be continue or hangup"
    if "advanced_machine_detection" not in body:
        return None
    amd = body["advanced_machine_detection"]
    if not isinstance(amd, dict) or not amd.keys() <= {"behavior", "mode", "beep_timeout"}:
        return "advanced_machine_detection must be an object of behavior, mode and beep_timeout"
    for name, choices in _AMD_CHOICES.items():
        if name in amd and amd[name] not in choices:
            return f"advanced_machine_detection.{name} must be one of {', '.join(choices)}"
    timeout = amd.get("beep_timeout", 45)
    if type(timeout) is not int or not 45 <= timeout <= 120:
        return "advanced_machine_detection.beep_timeout must be an integer from 45 to 120"
    return None


def _listed(number: str, numbers: set[str]) -> bool:
    """Whether `number` (Vonage's digits-only form) is in `numbers` (written either way)."""
    return number.lstrip("+") in {n.lstrip("+") for n in numbers}


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
