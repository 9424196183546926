"""A stand-in for the Kubernetes API server and kubelet, for tests of PipesK8sClient-based launchers.

`FakeKubernetesApi.install` replaces only the CoreV1Api calls PipesK8sClient makes (create, list,
read log, delete) and kubeconfig loading. The pod it is asked to create is recorded; when its log
is read, `run_container(pod)` produces what the container would print (and its exit code), which
is served with `kubectl logs --timestamps` framing. Two runners:
  pipes_in_process(worker)  runs a dagster-pipes function against the pod's env, in this process
  command_locally(...)      runs the pod's command as a subprocess with the pod's env (secretKeyRefs
                            resolved from a dict), i.e. the real worker module
"""

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from dagster_pipes import PipesContext, PipesDefaultContextLoader, PipesDefaultMessageWriter, PipesMappingParamsLoader
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodList,
    V1PodStatus,
)

ContainerRunner = Callable[[V1Pod], tuple[str, int]]
REPO_ROOT = Path(__file__).resolve().parent.parent


class _LogResponse:
    """What `read_namespaced_pod_log(..., _preload_content=False)` returns: an iterable body."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data.splitlines(keepends=True))


def timestamped(text: str) -> bytes:
    """Lines as `kubectl logs --timestamps` serves them."""
    lines = [
        f"2026-01-01T00:{i // 60000:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000Z {line}"
        for i, line in enumerate(text.splitlines())
    ]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class FakeKubernetesApi:
    run_container: ContainerRunner
    created: list[tuple[str, V1Pod]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    kubeconfig_loads: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    exit_code: int | None = None  # None while the container runs

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setattr(kubernetes.config, "load_kube_config", self.load_kube_config)
        core = kubernetes.client.CoreV1Api
        # Already bound to this fake, so set on CoreV1Api they take no api instance.
        monkeypatch.setattr(core, "create_namespaced_pod", self.create_namespaced_pod)
        monkeypatch.setattr(core, "list_namespaced_pod", self.list_namespaced_pod)
        monkeypatch.setattr(core, "read_namespaced_pod_log", self.read_namespaced_pod_log)
        monkeypatch.setattr(core, "delete_namespaced_pod", self.delete_namespaced_pod)

    def load_kube_config(self, **kwargs: Any) -> None:
        self.kubeconfig_loads.append(kwargs)

    def create_namespaced_pod(self, namespace: str, body: V1Pod, **_: Any) -> V1Pod:
        self.created.append((namespace, body))
        return body

    def list_namespaced_pod(self, namespace: str, **_: Any) -> V1PodList:
        _, pod = self.created[-1]
        container = pod.spec.containers[0]
        if self.exit_code is None:
            state = V1ContainerState(running=V1ContainerStateRunning())
        else:
            state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=self.exit_code))
        status = V1ContainerStatus(
            name=container.name, image=container.image, image_id="", ready=True, restart_count=0, state=state
        )
        return V1PodList(
            items=[
                V1Pod(metadata=V1ObjectMeta(name=pod.metadata.name), status=V1PodStatus(container_statuses=[status]))
            ]
        )

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: Any) -> _LogResponse:
        _, pod = self.created[-1]
        assert name == pod.metadata.name
        if self.exit_code is None:
            self.log, self.exit_code = self.run_container(pod)
        return _LogResponse(timestamped(self.log))

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append((namespace, name))


def plain_env(pod: V1Pod) -> dict[str, str]:
    return {var.name: var.value for var in pod.spec.containers[0].env if var.value_from is None}


def pipes_in_process(worker: Callable[[PipesContext], None], exit_code: int = 0) -> ContainerRunner:
    """Run `worker` with the Pipes context the pod's env carries; its stdout+stderr is the log."""

    def run(pod: V1Pod) -> tuple[str, int]:
        output = io.StringIO()
        with (
            contextlib.redirect_stderr(output),
            contextlib.redirect_stdout(output),
            PipesContext(
                params_loader=PipesMappingParamsLoader(plain_env(pod)),
                context_loader=PipesDefaultContextLoader(),
                message_writer=PipesDefaultMessageWriter(),
            ) as pipes,
        ):
            worker(pipes)
        return output.getvalue(), exit_code

    return run


def command_locally(secrets: Mapping[str, Mapping[str, str]], python: str = sys.executable) -> ContainerRunner:
    """Run the pod's command here, with exactly the pod's env; `python` stands in for the image's."""

    def run(pod: V1Pod) -> tuple[str, int]:
        container = pod.spec.containers[0]
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
        for var in container.env:
            if var.value_from is None:
                env[var.name] = var.value
                continue
            ref = var.value_from.secret_key_ref
            if ref.key in secrets.get(ref.name, {}):
                env[var.name] = secrets[ref.name][ref.key]
            elif not ref.optional:  # the kubelet refuses to start the container
                return f"CreateContainerConfigError: secret {ref.name!r} has no key {ref.key!r}", 1
        command = [python if part == "python" else part for part in container.command]
        done = subprocess.run(
            command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return done.stdout, done.returncode

    return run
