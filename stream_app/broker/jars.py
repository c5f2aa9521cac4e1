"""The Kafka jars the local broker runs from, and the Java that runs them.

The jars are shared by every broker of a Kafka version, outside the repository:
``~/.cache/stream_app/kafka-<version>/libs`` (or ``$STREAM_APP_KAFKA_JARS_DIR``). Maven fetches
them once with the packaged ``pom.xml`` (:func:`ensure_jars`) into a temporary directory that is
renamed into place, so an interrupted download never leaves a half-filled cache. This module also
finds the ``java`` executable and builds the classpath of the jars.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stream_app.broker.host import file_lock, run_captured
from stream_app.exceptions import BrokerError

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "JARS_DIR_ENV",
    "POM_PATH",
    "classpath",
    "default_jars_dir",
    "ensure_jars",
    "find_java",
    "jars_present",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
JARS_DIR_ENV = "STREAM_APP_KAFKA_JARS_DIR"
POM_PATH = Path(__file__).resolve().parent / "pom.xml"
_MAVEN_TIMEOUT_S = 1800.0


def default_jars_dir(kafka_version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Where the Kafka jars of ``kafka_version`` are cached.

    ``$STREAM_APP_KAFKA_JARS_DIR`` (the directory holding the jars themselves) wins; otherwise
    ``~/.cache/stream_app/kafka-<version>/libs``.
    """
    override = os.environ.get(JARS_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "stream_app" / f"kafka-{kafka_version}" / "libs"


def classpath(jars_dir: Path) -> str:
    """The JVM ``-cp`` value that holds every jar of ``jars_dir``."""
    return f"{jars_dir}{os.sep}*"


def find_java() -> str:
    """Path of the ``java`` executable ($JAVA_HOME/bin/java first, then PATH)."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found:
        return found
    raise BrokerError(
        "Java 17 or newer is needed to run the local Kafka broker, and no `java` was found "
        "(neither $JAVA_HOME/bin/java nor on PATH). Install a JDK/JRE "
        "(Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`; macOS: "
        "`brew install openjdk@17`) or set JAVA_HOME -- or point KAFKA_BOOTSTRAP_SERVERS at an "
        "existing Kafka cluster instead."
    )


def jars_present(jars_dir: Path, kafka_version: str) -> bool:
    """True when ``jars_dir`` holds the jars of Kafka ``kafka_version``."""
    v = kafka_version
    return (jars_dir / f"kafka_2.13-{v}.jar").is_file() and (
        jars_dir / f"kafka-clients-{v}.jar"
    ).is_file()


def ensure_jars(target: Path, kafka_version: str) -> Path:
    """Download the Kafka jars with Maven into ``target`` unless they are there; return it.

    Maven writes into a temporary sibling directory which is renamed into place only when
    complete; a file lock keeps concurrent callers from downloading twice.
    """
    if jars_present(target, kafka_version):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if jars_present(target, kafka_version):
            return target
        if target.exists() and any(target.iterdir()):
            raise BrokerError(
                f"{target} exists but holds no kafka_2.13-{kafka_version}.jar. Remove "
                f"it (or set {JARS_DIR_ENV} to another directory) and try again."
            )
        find_java()  # Maven needs Java too; say so clearly.
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven (`mvn`) is needed once to download the Kafka {kafka_version} "
                f"jars into {target}, and it is not on PATH. Install it (Debian/Ubuntu: "
                "`sudo apt-get install maven`; macOS: `brew install maven`), or put the jars "
                f"there yourself (or set {JARS_DIR_ENV}), or point KAFKA_BOOTSTRAP_SERVERS "
                "at an existing Kafka cluster."
            )
        with tempfile.TemporaryDirectory(
            prefix=f".{target.name}.download-", dir=target.parent
        ) as tmp:
            work = Path(tmp)
            out = work / "libs"
            shutil.copyfile(POM_PATH, work / "pom.xml")
            cmd = [
                mvn,
                "-B",
                "--no-transfer-progress",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={out}",
                f"-Dkafka.version={kafka_version}",
            ]
            log.info("downloading Kafka %s jars with Maven into %s", kafka_version, target)
            try:
                result = run_captured(cmd, work, _MAVEN_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(
                    f"Maven did not finish downloading the Kafka {kafka_version} jars "
                    f"within {_MAVEN_TIMEOUT_S:.0f} s. Check network access to Maven Central."
                ) from exc
            if result.returncode != 0 or not jars_present(out, kafka_version):
                output = (result.stdout or "") + (result.stderr or "")
                tail = "\n".join(output.strip().splitlines()[-25:])
                raise BrokerError(
                    f"Maven could not download the Kafka {kafka_version} jars "
                    f"(exit code {result.returncode}). Check network access to Maven Central "
                    f"and that Kafka {kafka_version} exists. Command: {' '.join(cmd)}\n"
                    f"Last lines of Maven's output:\n{tail}"
                )
            if target.exists():
                target.rmdir()  # empty, checked above
            os.replace(out, target)
    return target
