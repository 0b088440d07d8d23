"""A model's own ``code/`` served in a separate process, with the PyTorch inference toolkit's request cycle:
``model_fn`` once, then ``input_fn`` -> ``predict_fn`` -> ``output_fn`` per request.

A separate process, as in the inference container, so that the model's flat modules (``inference``, ``utils``,
``model_def``, ...) never meet this process's: nothing is added to this ``sys.path`` or ``sys.modules``.

    with ModelServer(model_dir) as server:
        status, content_type, body = server.invoke(png_bytes, "image/png", "application/json")

An error carrying a ``status_code`` (a ``sagemaker_inference`` BaseInferenceToolkitError in the container, which
the model's code raises) keeps that status; any other exception is a 500, as the toolkit answers.
``toolkit_errors=True`` provides a minimal ``sagemaker_inference.errors`` module to the model's code, as the
container has one (so its errors subclass BaseInferenceToolkitError as they would there).

``model_fn`` is called as the toolkit calls it (``sagemaker_inference.transformer``'s ``_run_handler_function``):
with one more argument, a ``Context`` (``system_properties``: ``model_dir`` and ``gpu_id``, the worker's GPU or
None on a CPU host, as TorchServe gives it), when it takes one more parameter than ``model_dir``.

    python -m medimg.serving MODEL_DIR PROGRAM [GPU_ID]  # the server process itself (JSON lines on stdin/stdout)
"""
import base64
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading

ERRORS_STUB = (
    "class BaseInferenceToolkitError(Exception):\n"
    "    def __init__(self, status_code, message, phrase):\n"
    "        self.status_code, self.message, self.phrase = status_code, message, phrase\n"
    "        super().__init__(status_code, message, phrase)\n")


class ModelServer:
    """The server process for one model directory (``model_dir/code/<program>`` holds the handlers)."""

    def __init__(self, model_dir, program="inference.py", *, env=None, python=sys.executable, toolkit_errors=False,
                 gpu_id=None):
        """``gpu_id``: the GPU the toolkit would give this worker (its context's ``gpu_id``); None: a CPU host."""
        self.model_dir, self.program = os.path.abspath(model_dir), program
        if not os.path.isfile(os.path.join(self.model_dir, "code", program)):
            raise FileNotFoundError(f"{self.model_dir}/code/{program} is missing: this model cannot be served")
        child_env = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()})
        self._stub = None
        if toolkit_errors:
            self._stub = tempfile.TemporaryDirectory(prefix="sagemaker-inference-stub-")
            package = os.path.join(self._stub.name, "sagemaker_inference")
            os.makedirs(package)
            for name, text in (("__init__.py", ""), ("errors.py", ERRORS_STUB)):
                with open(os.path.join(package, name), "w", encoding="utf-8") as fh:
                    fh.write(text)
            child_env["PYTHONPATH"] = os.pathsep.join(
                [self._stub.name] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
        self._lock = threading.Lock()
        argv = [python, "-m", "medimg.serving", self.model_dir, program] + ([] if gpu_id is None else [str(gpu_id)])
        self._proc = subprocess.Popen(argv,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env, text=True)

    def invoke(self, body, content_type, accept=None):
        """One request: returns ``(status, content type, body bytes)``."""
        request = {"body": base64.b64encode(bytes(body)).decode("ascii"), "content_type": content_type,
                   "accept": accept}
        with self._lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            return 500, "text/plain", b"the model server exited (its traceback is on stderr)"
        reply = json.loads(line)
        return reply["status"], reply["content_type"], base64.b64decode(reply["body"])

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._stub is not None:
            self._stub.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Context:
    """What the toolkit passes a handler that takes one more parameter: TorchServe's ``system_properties``."""

    def __init__(self, model_dir, gpu_id=None):
        self.system_properties = {"model_dir": model_dir, "gpu_id": gpu_id}


def call_handler(function, *args, context=None):
    """``function(*args)``, or ``function(*args, context)`` when it takes one more parameter, as the toolkit does."""
    count = len(inspect.signature(function).parameters)
    if count == len(args) + 1:
        return function(*args, context)
    return function(*args)


def serve(model_dir, program, gpu_id=None):
    """The server loop (in the child process): model_fn once, then one JSON line in, one JSON line out."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the handlers print goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    sys.path.insert(0, os.path.join(model_dir, "code"))  # this child process is the model's own, as the container
    import importlib

    module = importlib.import_module(os.path.splitext(program)[0])
    model = call_handler(module.model_fn, model_dir, context=Context(model_dir, gpu_id))
    default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json")
    for line in sys.stdin:
        request = json.loads(line)
        accept = request["accept"]
        if not accept or accept == "*/*":
            accept = default_accept
        try:
            data = module.input_fn(bytearray(base64.b64decode(request["body"])), request["content_type"])
            result = module.output_fn(module.predict_fn(data, model), accept)
            body, content_type = result if isinstance(result, tuple) else (result, accept)
            body = body.encode() if isinstance(body, str) else bytes(body)
            reply = {"status": 200, "content_type": content_type, "body": body}
        except Exception as exc:  # noqa: BLE001 - a status_code is kept; anything else is the toolkit's 500
            status = getattr(exc, "status_code", None)
            if not isinstance(status, int):
                import traceback

                traceback.print_exc()
                status, message = 500, f"{type(exc).__name__}: {exc}"
            else:
                message = str(getattr(exc, "message", exc))
            reply = {"status": status, "content_type": "text/plain", "body": message.encode()}
        reply["body"] = base64.b64encode(reply["body"]).decode("ascii")
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)
