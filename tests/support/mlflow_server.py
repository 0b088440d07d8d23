"""A real MLflow tracking server on 127.0.0.1 for the tests: ``mlflow server`` (this environment's, .venv) with a
sqlite backend and artifacts proxied to a local folder (``--artifacts-destination``: clients upload over HTTP, as
they do to a SageMaker managed MLflow server), one worker, telemetry off, and no job execution (MLflow 3's server
otherwise starts seven huey consumer processes for its GenAI jobs and periodic tasks, about 21 s of CPU per
server that tracking never uses). Tests assert through ``MlflowClient``.

    with MlflowServer(tmp_path / "mlflow") as server:
        server.uri          # http://127.0.0.1:<port>
        server.client()     # mlflow.tracking.MlflowClient on it

``closed_port_uri()`` is a tracking URI nothing listens on (the "unreachable server" case).
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_uri():
    """``http://127.0.0.1:<port>`` where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


class MlflowServer:
    def __init__(self, folder, startup_timeout=120):
        self.folder = os.path.abspath(folder)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        os.makedirs(os.path.join(self.folder, "artifacts"), exist_ok=True)
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
               "--artifacts-destination", os.path.join(self.folder, "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        self.log = open(os.path.join(self.folder, "server.log"), "w", encoding="utf-8")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **QUIET),
                                        start_new_session=True)
        end = time.time() + self.startup_timeout
        while time.time() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}: {self.server_log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health in {self.startup_timeout} s: {self.server_log()[-2000:]}")

    def server_log(self):
        with open(os.path.join(self.folder, "server.log"), encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        if self.process is not None:
            self.log.close()
        self.process = None

    def client(self):
        """An MlflowClient on this server (sagemaker-mlflow's header provider, when installed, would warn at every
        request to a URI that is not an ARN: medimg.tracking quiets it the same way)."""
        import logging

        os.environ.update(QUIET)
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
        return MlflowClient(tracking_uri=self.uri)
