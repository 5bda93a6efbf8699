"""End-to-end fixtures: the real trailwatch binary on 127.0.0.1 (OS-chosen port),
driven by real clients (boto3, the aws CLI).

TRAILWATCH_BIN names the binary (the CI script builds it); each server gets a
fresh data directory and is stopped with SIGTERM at the end of its test. A test
fails if the server logged an unexpected ERROR or WARN line.
"""
import atexit
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config

ACCESS_KEY = "AKIAE2ETESTKEY000001"
SECRET_KEY = "e2eTestSecretKey/0000000000000000000000+"
ACCOUNT = "111122223333"
REGION = "us-east-1"


def trailwatch_bin():
    path = os.environ.get("TRAILWATCH_BIN")
    if not path:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
        path = os.path.join(target, "debug", "trailwatch")
    if not os.path.exists(path):
        pytest.fail(f"trailwatch binary not found at {path}; build it or set TRAILWATCH_BIN")
    return path


class Server:
    """One running trailwatch process."""

    def __init__(self, data_dir, extra_env=None, root_from_env=True):
        self.data_dir = data_dir
        self.extra_env = extra_env or {}
        self.root_from_env = root_from_env
        self.proc = None
        self.endpoint = None
        self.log_path = os.path.join(os.path.dirname(data_dir), os.path.basename(data_dir) + ".log")
        self.allowed_warnings = []

    def start(self):
        ready = os.path.join(os.path.dirname(self.data_dir), "ready-" + os.path.basename(self.data_dir))
        if os.path.exists(ready):
            os.remove(ready)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILWATCH_ROOT_")}
        env["TRAILWATCH_LOG"] = "info"
        # The server's own host agent is off unless a test asks for it: its
        # metrics and calls would change what other tests count.
        env["TRAILWATCH_NO_HOST_AGENT"] = "true"
        if self.root_from_env:
            env.update({
                "TRAILWATCH_ROOT_ACCESS_KEY_ID": ACCESS_KEY,
                "TRAILWATCH_ROOT_SECRET_ACCESS_KEY": SECRET_KEY,
                "TRAILWATCH_ACCOUNT_ID": ACCOUNT,
            })
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [trailwatch_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             "--ready-file", ready],
            stdout=log, stderr=log, env=env,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(ready) and open(ready).read().strip():
                self.endpoint = "http://" + open(ready).read().strip()
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"trailwatch exited early:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"trailwatch did not start:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else None

    def log(self):
        try:
            return open(self.log_path, encoding="utf-8", errors="replace").read()
        except FileNotFoundError:
            return ""

    def unexpected_log_lines(self):
        bad = []
        for line in self.log().splitlines():
            if " ERROR " in line or " WARN " in line:
                if not any(a in line for a in self.allowed_warnings):
                    bad.append(line)
        return bad

    # Clients -------------------------------------------------------------

    def client(self, service, protocol=None, secret=SECRET_KEY, access_key=ACCESS_KEY, region=REGION):
        session = botocore.session.get_session()
        if protocol is not None:
            force_protocol(session, service, protocol)
        return boto3.Session(botocore_session=session).client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def cli(self, *args, check=True, env=None):
        full_env = dict(os.environ)
        full_env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "1",
        })
        full_env.update(env or {})
        # The aws CLI pinned beside this interpreter (the virtualenv's bin), not one elsewhere on PATH.
        aws = shutil.which("aws", path=os.path.dirname(sys.executable) + os.pathsep + full_env.get("PATH", ""))
        result = subprocess.run([aws, *args, "--output", "json"], capture_output=True, text=True, env=full_env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result


_FORCED_MODELS = {}


def force_protocol(session, service, protocol):
    """Makes botocore speak `protocol` for `service` by putting a copy of the
    service model with only its metadata changed first on the loader's search
    path, the way the wire fixtures were captured (fixtures/wire/README.md)."""
    key = (service, protocol)
    if key not in _FORCED_MODELS:
        # A loader of its own: the session's loader caches what it loads, so
        # reading the model through it would hand this very session the
        # unforced model (the first client of each protocol spoke JSON).
        loader = botocore.loaders.create_loader()
        api_version = loader.determine_latest_version(service, "service-2")
        model = copy.deepcopy(loader.load_service_model(service, "service-2", api_version))
        model["metadata"]["protocol"] = protocol
        model["metadata"]["protocols"] = [protocol]
        root = tempfile.mkdtemp(prefix=f"tw-model-{service}-{protocol}-")
        atexit.register(shutil.rmtree, root, True)
        os.makedirs(os.path.join(root, service, api_version))
        with open(os.path.join(root, service, api_version, "service-2.json"), "w") as f:
            json.dump(model, f)
        _FORCED_MODELS[key] = root
    session.get_component("data_loader").search_paths.insert(0, _FORCED_MODELS[key])


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path / "data"))
    srv.start()
    yield srv
    srv.stop()
    bad = srv.unexpected_log_lines()
    assert not bad, "unexpected ERROR/WARN lines in the server log:\n" + "\n".join(bad)
