"""A real, single-node Apache Kafka broker in KRaft mode, run from Maven Central jars.

No Docker engine is needed: ``deploy/kafka/pom.xml`` lists the broker; its jars are
resolved once with ``mvn dependency:copy-dependencies`` into ``deploy/kafka/lib``.
Each broker lives in a state folder (``$DRIFTLINE_HOME/kafka-<port>``, default
``.driftline/kafka-<port>``) holding its KRaft storage, configuration, log file and
pid file; :func:`bundled_brokers` lists them.  :func:`probe_kafka` tells whether a
Kafka broker answers at an address, and :func:`free_port_pair` finds a client port
whose neighbour (the controller port) is free too.

>>> broker = LocalKafka(port=9092)      # doctest: +SKIP
>>> broker.start()                       # doctest: +SKIP
'127.0.0.1:9092'

``LocalKafka(security="SASL_SSL")`` starts a secured broker instead: TLS with a CA and
broker certificate made at start with the JDK's ``keytool`` (the CA's PEM file is what
clients trust), SCRAM-SHA-256/512 authentication with an ``admin`` user created by the
storage format, and more users added through the Kafka admin API
(:meth:`LocalKafka.add_user`).  Its controller listener stays on loopback in clear.

>>> secured = LocalKafka(port=19092, security="SASL_SSL")          # doctest: +SKIP
>>> secured.start(); secured.add_user("etl", "a-password")         # doctest: +SKIP
>>> secured.client_security("etl", "a-password")["ca_file"]        # doctest: +SKIP
'.../kafka-19092/tls/ca.pem'
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from driftline.config import state_home
from driftline.config.kafka import KafkaConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
DEFAULT_PORT = 9092
ADMIN_USER = "admin"
"""The secured broker's own SCRAM user (inter-broker traffic and :meth:`LocalKafka.add_user`)."""
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


def kafka_lib_dir() -> Path:
    """Folder holding the broker jars ($DRIFTLINE_KAFKA_LIBS or deploy/kafka/lib)."""
    override = os.environ.get("DRIFTLINE_KAFKA_LIBS")
    return Path(override).resolve() if override else DEFAULT_POM.parent / "lib"


def fetch_jars(lib_dir: Path | None = None, pom: Path = DEFAULT_POM, *, quiet: bool = True) -> Path:
    """Resolve the broker jars with Maven once; later calls reuse the folder."""
    lib_dir = lib_dir or kafka_lib_dir()
    marker = lib_dir / ".complete"
    if marker.exists():
        return lib_dir
    if not pom.is_file():
        raise BrokerError(f"broker pom not found at {pom}; set DRIFTLINE_KAFKA_LIBS to a folder of Kafka jars")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is required to fetch the Kafka broker jars; install it or set DRIFTLINE_KAFKA_LIBS")
    lib_dir.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib_dir}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"mvn failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    if not any(lib_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn ran but no kafka_2.13 jar is in {lib_dir}")
    marker.write_text("ok\n")
    return lib_dir


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _bindable(host: str, port: int) -> bool:
    """Whether a server could listen on the port now (like the JVM, SO_REUSEADDR: a port
    whose old connections linger in TIME_WAIT counts as free; a listener does not)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(host: str = "127.0.0.1", *, prefer: Iterable[int] = ()) -> int:
    """A port P such that P and P+1 (the broker's controller port) are both free.

    The ``prefer`` ports are tried first (in order), then ports the system hands out.

    >>> p = free_port_pair()
    >>> _bindable("127.0.0.1", p) and _bindable("127.0.0.1", p + 1)
    True
    """
    for port in prefer:
        if 0 < port < 65535 and _bindable(host, port) and _bindable(host, port + 1):
            return port
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port < 65535 and _bindable(host, port + 1):
            return port
    raise BrokerError(f"found no two adjacent free ports on {host}")


def split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a comma-separated bootstrap list (``[::1]:9092`` works).

    >>> split_bootstrap("127.0.0.1:9092, kafka:19092")
    [('127.0.0.1', 9092), ('kafka', 19092)]
    >>> split_bootstrap("localhost")
    Traceback (most recent call last):
    ...
    driftline.broker.BrokerError: bad bootstrap address 'localhost': expected host:port
    """
    pairs = []
    for item in (part.strip() for part in bootstrap.split(",")):
        host, _, port = item.split("://")[-1].rpartition(":")
        if not host or not port.isdigit():
            raise BrokerError(f"bad bootstrap address {item!r}: expected host:port")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


@dataclass(frozen=True)
class KafkaProbe:
    """What answers at a bootstrap address: ``kafka`` (a usable broker), ``nothing``
    (no listener), ``refused`` (a broker that refuses these credentials or this TLS
    setup) or ``other`` (something that is not a usable Kafka broker)."""

    bootstrap: str
    kind: Literal["kafka", "nothing", "refused", "other"]
    detail: str


#: librdkafka errors that retrying will not fix: wrong credentials, mechanism or TLS trust.
_FATAL_CONNECT_ERRORS = ("_AUTHENTICATION", "_SSL")


def probe_kafka(bootstrap: str, *, timeout: float = 5.0, extra: Mapping[str, Any] | None = None) -> KafkaProbe:
    """Ask ``bootstrap`` for cluster metadata, bounded by ``timeout`` seconds.

    ``extra``: the client's librdkafka settings (``KafkaConfig.client_config()``: security).
    A closed port answers at once (``nothing``); wrong credentials or an untrusted
    certificate within a second (``refused``, the broker's reason in ``detail``); a
    listener that accepts and stays silent, or speaks another protocol, costs at most
    ``timeout`` (``other``).  A broker whose advertised addresses cannot be reached from
    here (a container's host name) is ``other`` too: clients could bootstrap but never produce.
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    addresses = split_bootstrap(bootstrap)
    if not any(_port_open(host, port, timeout=min(timeout, 1.0)) for host, port in addresses):
        return KafkaProbe(bootstrap, "nothing", "nothing listens there")
    errors: list[Any] = []
    conf = {**(extra or {}), "bootstrap.servers": bootstrap, "socket.timeout.ms": max(10, int(timeout * 1000)), "log_level": 0, "error_cb": errors.append}
    fatal = tuple(getattr(KafkaError, name) for name in _FATAL_CONNECT_ERRORS)
    client = Producer(conf)  # a producer serves error callbacks on poll(), an admin client does not
    deadline = time.monotonic() + timeout
    md = None
    while md is None:
        try:
            md = client.list_topics(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
        except KafkaException as exc:
            client.poll(0)
            refused = next((e for e in errors if e.code() in fatal), None)
            if refused is not None:
                return KafkaProbe(bootstrap, "refused", refused.str().split(": ", 1)[-1])
            if time.monotonic() >= deadline:
                reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
                return KafkaProbe(bootstrap, "other", f"no answer to a Kafka metadata request within {timeout:g} s: {reason.removeprefix('Failed to get metadata: ')}")
    brokers = list(md.brokers.values())
    unreachable = [f"{b.host}:{b.port}" for b in brokers if not _port_open(b.host, b.port, timeout=min(timeout, 1.0))]
    if not brokers:
        return KafkaProbe(bootstrap, "other", "a Kafka metadata request was answered without any broker")
    if unreachable:
        return KafkaProbe(bootstrap, "other", f"a Kafka broker answers but advertises {', '.join(unreachable)}, which cannot be reached from here")
    return KafkaProbe(bootstrap, "kafka", f"Kafka cluster {md.cluster_id} with {len(brokers)} broker(s)")


def require_kafka(kafka: KafkaConfig, *, timeout: float = 15.0, bootstrap_servers: str | None = None) -> None:
    """Fail fast, with what to do next, unless the brokers of ``kafka`` answer with its
    settings (``bootstrap_servers`` replaces its brokers): a wrong
    password or an untrusted certificate is reported within about a second instead of
    clients retrying forever."""
    target = bootstrap_servers or kafka.bootstrap_servers
    probe = probe_kafka(target, timeout=timeout, extra=kafka.client_config(bootstrap_servers=target))
    if probe.kind == "kafka":
        return
    sec = kafka.security
    if probe.kind == "refused":
        if "SSL" in probe.detail or "certificate" in probe.detail:
            hint = f"check kafka.security.ca_file ({sec.ca_file or 'unset: the system trust store'}) and endpoint_identification"
        else:
            hint = f"check kafka.security.username ({sec.username}), sasl_mechanism ({sec.sasl_mechanism}) and the password ($DRIFTLINE__KAFKA__SECURITY__PASSWORD or ..._FILE)"
        raise BrokerError(f"the Kafka broker at {target} refused the connection: {probe.detail}; {hint}")
    if probe.kind == "nothing":
        raise BrokerError(f"no Kafka broker listens at {target}; start one (`driftline kafka start`) or set kafka.bootstrap_servers / $KAFKA_BOOTSTRAP_SERVERS")
    raise BrokerError(f"{target} did not answer as a Kafka broker with kafka.security.protocol={sec.protocol}: {probe.detail}; check the address and that the protocol matches the broker's listener")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    state_dir: Path
    log_file: Path

    @property
    def port(self) -> int:
        return int(self.bootstrap.rpartition(":")[2])

    @property
    def state(self) -> Literal["running", "starting", "stopped"]:
        """``starting``: the process is alive but does not accept connections yet."""
        return "running" if self.running else "starting" if self.pid is not None else "stopped"

    def __str__(self) -> str:
        if self.pid is not None:
            return f"{self.state} pid={self.pid} bootstrap={self.bootstrap} log={self.log_file}"
        return f"stopped bootstrap={self.bootstrap} state={self.state_dir}"


class LocalKafka:
    """Start, stop and inspect one local KRaft broker (broker and controller in one JVM).

    ``security="SASL_SSL"``: the client listener requires TLS and SCRAM authentication
    (see the module docstring); the TLS material and the admin password live in the
    state folder (``tls/``, mode 0700) and are made on the first start.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        host: str = "127.0.0.1",
        controller_port: int | None = None,
        state_dir: Path | None = None,
        heap: str = "768m",
        security: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT",
    ) -> None:
        self.host = host
        self.port = port
        self.controller_port = controller_port or port + 1
        self.state_dir = (state_dir or state_home() / f"kafka-{port}").resolve()
        self.heap = heap
        self.security = security

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the broker's CA: what clients set as ``kafka.security.ca_file``."""
        return self.tls_dir / "ca.pem"

    def _secret(self, name: str) -> str:
        """A random password kept in ``tls/<name>`` (made once, mode 0600)."""
        path = self.tls_dir / name
        if not path.exists():
            self.tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def client_security(self, username: str = ADMIN_USER, password: str | None = None, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
        """A ``kafka.security`` section for this broker (the admin user by default)."""
        if self.security == "PLAINTEXT":
            return {"protocol": "PLAINTEXT"}
        return {"protocol": "SASL_SSL", "sasl_mechanism": mechanism, "username": username, "password": password or self._secret("admin.password"), "ca_file": str(self.ca_file)}

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of an admin client of this broker."""
        return KafkaConfig(bootstrap_servers=self.bootstrap, security=self.client_security()).client_config()

    def add_user(self, username: str, password: str, *, mechanisms: Iterable[str] = SCRAM_MECHANISMS, timeout: float = 30.0) -> None:
        """Create (or change the password of) a SCRAM user through the admin API
        (AlterUserScramCredentials), for each of ``mechanisms``."""
        from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        if self.security == "PLAINTEXT":
            raise BrokerError("add_user needs a broker started with security='SASL_SSL'")
        admin = AdminClient(self.admin_config())  # kept alive until the futures resolve
        for m in mechanisms:  # one request per mechanism: the broker refuses a user twice in one request
            info = ScramCredentialInfo(getattr(ScramMechanism, m.replace("-", "_")), 8192)
            for fut in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(username, info, password.encode(), secrets.token_bytes(16))], request_timeout=timeout).values():
                fut.result(timeout)

    def _make_tls(self, java: str) -> None:
        """CA, broker key pair signed by it (SAN: the host, localhost, 127.0.0.1), broker
        keystore and truststore (PKCS12), the CA as PEM for librdkafka: all with keytool."""
        keytool = shutil.which("keytool") or str(Path(java).resolve().parent / "keytool")
        if not Path(keytool).exists():
            raise BrokerError("keytool (part of the JDK) is required to make the secured broker's certificates")
        d = self.tls_dir
        if (d / "broker.p12").exists() and self.ca_file.exists():
            return
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in ("ca.p12", "broker.p12", "truststore.p12", "broker.csr", "broker.pem", "ca.pem"):
            (d / stale).unlink(missing_ok=True)
        store_pw = self._secret("store.password")
        san = f"SAN=dns:localhost,ip:127.0.0.1,{'ip' if self.host.replace('.', '').isdigit() else 'dns'}:{self.host}"
        common = ["-storetype", "PKCS12", "-storepass", store_pw, "-keypass", store_pw]
        steps = [
            ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650", "-dname", "CN=driftline local CA", "-ext", "bc:c", "-keystore", "ca.p12", *common],
            ["-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-file", "ca.pem", "-storepass", store_pw],
            ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650", "-dname", f"CN={self.host}", "-ext", san, "-keystore", "broker.p12", *common],
            ["-certreq", "-alias", "broker", "-keystore", "broker.p12", "-file", "broker.csr", "-storepass", store_pw],
            ["-gencert", "-alias", "ca", "-keystore", "ca.p12", "-infile", "broker.csr", "-outfile", "broker.pem", "-rfc", "-validity", "3650", "-ext", san, "-storepass", store_pw],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "broker.p12", *common],
            ["-importcert", "-noprompt", "-alias", "broker", "-file", "broker.pem", "-keystore", "broker.p12", *common],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "truststore.p12", *common],
        ]
        for args in steps:
            proc = subprocess.run([keytool, *args], cwd=d, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BrokerError(f"keytool {args[0]} failed: {proc.stdout[-800:]} {proc.stderr[-800:]}")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(pid is not None and _port_open(self.host, self.port), pid, self.bootstrap, self.state_dir, self.log_file)

    def _security_properties(self) -> list[str]:
        """Listener, TLS and SASL settings of the client listener."""
        name = self.security
        lines = [
            f"listeners={name}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners={name}://{self.host}:{self.port}",
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={name}",
        ]
        if name == "PLAINTEXT":
            return lines
        store_pw, admin_pw = self._secret("store.password"), self._secret("admin.password")
        lines += [
            f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            *(
                f'listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN_USER}" password="{admin_pw}";'
                for m in SCRAM_MECHANISMS
            ),
            f"ssl.keystore.location={self.tls_dir / 'broker.p12'}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={store_pw}",
            f"ssl.key.password={store_pw}",
            f"ssl.truststore.location={self.tls_dir / 'truststore.p12'}",
            "ssl.truststore.type=PKCS12",
            f"ssl.truststore.password={store_pw}",
            "ssl.client.auth=requested",
        ]
        return lines

    def _write_properties(self) -> Path:
        props = self.state_dir / "server.properties"
        data = self.state_dir / "data"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
            *self._security_properties(),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={data}",
            "num.partitions=3",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=3",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "message.max.bytes=2097152",
            "auto.create.topics.enable=true",
            "",
        ]
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds passwords when secured
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines))
        return props

    def start(self, *, timeout: float = 90.0, die_with_parent: bool = False) -> str:
        """Start the broker if it is not running; return the bootstrap address (idempotent).

        ``die_with_parent``: the broker gets SIGTERM when the calling process dies, even
        by SIGKILL (Linux parent-death signal, set by ``setpriv``), so a broker started
        for one command's lifetime is never left behind.
        """
        st = self.status()
        if st.running:
            return self.bootstrap
        if st.pid is not None:  # process alive but not yet listening: wait for it
            self._wait_ready(st.pid, timeout)
            return self.bootstrap
        if _port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use by another process; choose another with --port")
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java 17+ is required to run the local Kafka broker")
        libs = fetch_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.security != "PLAINTEXT":
            self._make_tls(java)
        props = self._write_properties()
        classpath = f"{libs}/*"
        if not (self.state_dir / "data" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            scram = [] if self.security == "PLAINTEXT" else [a for m in SCRAM_MECHANISMS for a in ("--add-scram", f"{m}=[name={ADMIN_USER},password={self._secret('admin.password')}]")]
            fmt = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(cluster_id), "-c", str(props), *scram],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout[-1500:]}\n{fmt.stderr[-1500:]}")
        cmd = [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true", "-cp", classpath, "kafka.Kafka", str(props)]
        setpriv = shutil.which("setpriv") if die_with_parent else None
        if setpriv:  # setpriv sets the parent-death signal, then execs java (same pid)
            cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.state_dir,
        )
        log.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        self._wait_ready(proc.pid, timeout)
        return self.bootstrap

    def _wait_ready(self, pid: int, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                tail = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
                raise BrokerError(f"the broker exited during start-up; log tail:\n{tail}")
            if _port_open(self.host, self.port):
                try:
                    md = AdminClient(self.admin_config()).list_topics(timeout=5)
                    if md.brokers:
                        return
                except Exception:  # not ready yet
                    pass
            time.sleep(0.25)
        raise BrokerError(f"the broker did not accept connections within {timeout:.0f}s; see {self.log_file}")

    def stop(self, *, timeout: float = 30.0) -> bool:
        """Stop the broker; returns False if it was not running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True


def bundled_brokers(home: Path | None = None) -> list[LocalKafka]:
    """Every broker state folder (``kafka-<port>``) under ``home`` (default
    :func:`~driftline.config.state_home`), by port; running or not."""
    root = home or state_home()
    found = [LocalKafka(port=int(d.name[6:]), state_dir=d) for d in root.glob("kafka-*") if d.is_dir() and d.name[6:].isdigit()]
    return sorted(found, key=lambda b: b.port)


def _kafka_cluster_id(seed_hex: str) -> str:
    """A KRaft cluster id: 16 bytes, URL-safe base64 without padding (22 characters).

    The first byte is forced below 0xF8 so the id never starts with ``-`` or ``_``
    (a leading ``-`` would be read as an option by the storage tool).

    >>> all(not _kafka_cluster_id(f"{b:02x}" + "00" * 15)[0] in "-_" for b in range(256))
    True
    """
    import base64

    raw = bytearray(bytes.fromhex((seed_hex + "0" * 32)[:32]))
    raw[0] &= 0xF7 if raw[0] >= 0xF8 else 0xFF
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
