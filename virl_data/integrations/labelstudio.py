"""A corpus in Label Studio: push records as tasks (the chain as predictions), pull annotations back as reviews.

The only module importing ``label_studio_sdk`` (lazily, inside functions); Label Studio itself runs elsewhere, we
are only its client. The task layout, the templates and the rules that turn an annotation into a review live in
``virl_data.integrations.labelstudio_tasks`` (no server needed; re-exported here).

- ``push``: create the project with a template (or reuse it: its labeling config must be that template), make sure
  a local-files storage serves the images (or use ``image_url_prefix`` URLs), import one task per record not yet in
  the project, the chain as predictions in percent coordinates (``boxconv``). Records with an unknown image size or
  a chain longer than the template numbers are skipped with the reason.
- ``pull``: export every task with its annotations, turn each submitted annotation into a ``Review`` (who: the
  annotator's email, when: the annotation's ``updated_at``), merge with ``merge.merge_reviews`` (append-only,
  idempotent: the mined chain and answer are never overwritten). Unknown ``virl_id`` s and unreadable annotations
  go to the report; no corpus record is ever dropped. A project whose config is not a virl template is refused.

Connection: ``url`` / ``api_key`` arguments, else ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``. Neither the URL
nor the key appears in an error message, and both are blanked out of the HTTP libraries' log records (httpx logs
every request's URL at INFO) while this module talks to the server.

Example (needs a Label Studio server)::

    result = push(records, "refcoco review", image_root="images/", document_root="/data")
    ...  # people review in Label Studio
    records, report = pull("refcoco review", records)
    print(report.summary())  # applied 3, unchanged 0, unknown ids 0, invalid 1
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from virl_data.core.errors import ConfigError
from virl_data.core.types import RationaleRecord
from virl_data.integrations import labelstudio_tasks
from virl_data.integrations.labelstudio_tasks import *  # noqa: F403  (re-exported: see __all__)
from virl_data.integrations.labelstudio_tasks import (
    CHAIN,
    IMAGE,
    TEMPLATES,
    LabelStudioError,
    load_template,
    local_files_url,
    record_to_task,
    same_config,
    task_edits,
    template_name,
    template_steps,
)
from virl_data.review.merge import MergeReport, ReviewEdit, effective, merge_reviews

BATCH = 500  # tasks per import request
URL_SOURCE, KEY_SOURCE = "--url / LABEL_STUDIO_URL", "--api-key / LABEL_STUDIO_API_KEY"
# loggers that may print the request URL (httpx at INFO) or the host (httpcore at DEBUG)
HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy")


# --- connection ------------------------------------------------------------------------------------------------------
def _secrets(url: str, api_key: str | None) -> tuple[str, ...]:
    """What must never be shown: the key, the URL, its ``host:port`` and host (longest first)."""
    parts = urllib.parse.urlsplit(url)
    found = {s for s in (api_key, url, parts.netloc, parts.hostname) if s}
    return tuple(sorted(found, key=len, reverse=True))


def _blank(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _one_line(text: str, secrets: Sequence[str]) -> str:
    return _blank(" ".join(str(text).split()), secrets)


class _BlankSecrets(logging.Filter):
    """Rewrites a log record whose message shows the URL or the key, with them blanked out."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        blanked = _blank(text, self.secrets)
        if blanked != text:
            record.msg, record.args = blanked, None
        return True


@contextlib.contextmanager
def _blanked_logs(secrets: Sequence[str]) -> Iterator[None]:
    """While inside: the HTTP libraries' records have the secrets blanked (a logger's filters see only its own
    records, hence one filter per logger)."""
    loggers, blank = [logging.getLogger(name) for name in HTTP_LOGGERS], _BlankSecrets(secrets)
    for logger in loggers:
        logger.addFilter(blank)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(blank)


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        detail = body.get("validation_errors") or body.get("detail") or body
        return str(detail)[:300]
    return re.sub(r"<[^>]+>", " ", str(body))[:200]


@contextlib.contextmanager
def _calling(url: str, api_key: str | None, what: str) -> Iterator[None]:
    """Translate transport and API errors of one SDK call into a one-line ``LabelStudioError`` that shows neither
    the URL nor the key; blank both out of the HTTP logs meanwhile."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    secrets = _secrets(url, api_key)
    try:
        with _blanked_logs(secrets):
            yield
    except httpx.TransportError as exc:
        msg = f"cannot reach the Label Studio server given by {URL_SOURCE} ({type(exc).__name__})"
        raise LabelStudioError(_one_line(msg, secrets)) from None
    except ApiError as exc:
        if exc.status_code in (401, 403):
            msg = (f"Label Studio refused the API key (HTTP {exc.status_code}) while trying to {what}; "
                   f"check {KEY_SOURCE}")
        else:
            msg = f"Label Studio: cannot {what} (HTTP {exc.status_code}: {_detail(exc.body)})"
        raise LabelStudioError(_one_line(msg, secrets)) from None
    except ValueError as exc:  # an answer that is not Label Studio's JSON (pydantic/JSON errors are ValueErrors)
        msg = (f"the server given by {URL_SOURCE} did not answer like a Label Studio server while trying to {what} "
               f"({type(exc).__name__})")
        raise LabelStudioError(_one_line(msg, secrets)) from None


@dataclass
class Connection:
    """A Label Studio client with the URL it talks to (kept to blank it and the key out of messages; neither is in
    the repr)."""

    client: Any = field(repr=False)
    url: str = field(repr=False)
    api_key: str = field(repr=False)

    def call(self, what: str) -> contextlib.AbstractContextManager[None]:
        """``with conn.call("list projects"): ...`` turns SDK errors into one-line ``LabelStudioError`` s."""
        return _calling(self.url, self.api_key, what)


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0) -> Connection:
    """A checked connection: ``url`` / ``api_key`` or ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``; one cheap call
    (``users.whoami``) proves the server answers and accepts the key."""
    url = (url or os.environ.get("LABEL_STUDIO_URL") or "").strip().rstrip("/")
    api_key = (api_key or os.environ.get("LABEL_STUDIO_API_KEY") or "").strip()
    if not url:
        raise ConfigError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
    if not api_key:
        raise ConfigError("no Label Studio API key: pass --api-key or set LABEL_STUDIO_API_KEY")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the Label Studio URL ({URL_SOURCE}) must look like http://host:port")
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise LabelStudioError("label-studio-sdk is not installed: pip install 'virl[labelstudio]'") from None
    conn = Connection(LabelStudio(base_url=url, api_key=api_key, timeout=timeout), url, api_key)
    with conn.call("check the API key"):
        conn.client.users.whoami(request_options={"max_retries": 1})
    return conn


# --- projects and tasks ----------------------------------------------------------------------------------------------
def find_project(conn: Connection, title: str) -> Any | None:
    """The project titled exactly ``title`` (None when there is none; an error when several share it)."""
    with conn.call("list projects"):
        found = [p for p in conn.client.projects.list(title=title) if p.title == title]
    if len(found) > 1:
        ids = ", ".join(str(p.id) for p in found)
        raise LabelStudioError(f"several Label Studio projects are titled {title!r} (ids {ids}); rename all but one")
    return found[0] if found else None


def _template_name(xml: str) -> str | None:
    return next((t for t in TEMPLATES if same_config(xml, load_template(t))), None)


def ensure_project(conn: Connection, title: str, template: str | os.PathLike[str]) -> tuple[Any, bool]:
    """The project ``title`` with ``template``'s config: created when missing; an existing one must use the same
    config. Returns ``(project, created)``."""
    xml = load_template(template)
    project = find_project(conn, title)
    if project is not None:
        if not same_config(project.label_config or "", xml):
            known = _template_name(project.label_config or "")
            hint = f"it uses template {known}" if known else "it uses a labeling config of its own"
            raise LabelStudioError(
                f"Label Studio project {title!r} (id {project.id}) does not use template {template_name(template)} "
                f"({hint}); push with that --template or to another --project"
            )
        return project, False
    with conn.call(f"create project {title!r}"):
        project = conn.client.projects.create(
            title=title, label_config=xml, description="virl rationale chains (virl-data labelstudio push)"
        )
    return project, True


def export_tasks(conn: Connection, project_id: int) -> list[dict[str, Any]]:
    """Every task of a project with its data and annotations (Label Studio's JSON export, all tasks)."""
    with conn.call(f"export project {project_id}"):
        raw = b"".join(conn.client.projects.exports.download_sync(project_id, export_type="JSON",
                                                                   download_all_tasks=True))
    return orjson.loads(raw) if raw else []


def _emails(conn: Connection) -> dict[int, str]:
    with conn.call("list users"):
        return {u.id: u.email or u.username or f"user-{u.id}" for u in conn.client.users.list()}


# --- images ----------------------------------------------------------------------------------------------------------
def _document_root(image_root: Path, document_root: str | os.PathLike[str] | None) -> Path:
    root = document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    if not root:
        raise ConfigError(
            "images need --image-url-prefix, or a local-files document root (--document-root or "
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, as the server has it) containing the image root"
        )
    root = Path(root).resolve()
    if not image_root.resolve().is_relative_to(root):
        raise ConfigError(f"the image root {image_root} is not inside the Label Studio document root {root}")
    return root


def ensure_local_storage(conn: Connection, project_id: int, image_root: Path) -> None:
    """A local-files import storage for ``image_root`` on the project (Label Studio serves no file without one)."""
    path = str(image_root.resolve())
    with conn.call("list local storages"):
        existing = conn.client.import_storage.local.list(project=project_id)
    if any(os.path.normpath(s.path or "") == path for s in existing):
        return
    with conn.call(f"create a local-files storage for {path}"):
        conn.client.import_storage.local.create(project=project_id, path=path, use_blob_urls=True, title="virl images")


# --- push ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResult:
    """What ``push`` did: the project, whether it was created, tasks imported, records already there, records not
    pushed with the reason, seconds taken."""

    project: str
    project_id: int
    template: str
    created: bool
    imported: int
    existing: int
    skipped: tuple[tuple[str, str], ...]
    seconds: float


def _skip_reason(record: RationaleRecord, max_steps: int, predictions: bool) -> str | None:
    if record.image.width <= 0 or record.image.height <= 0:
        return "unknown_image_size"
    n = len(effective(record).chain)
    if predictions and n > max_steps:
        return f"chain_too_long: {n} steps, the template numbers {max_steps}"
    return None


def _image_urls(
    image_root: str | os.PathLike[str] | None,
    document_root: str | os.PathLike[str] | None,
    image_url_prefix: str | None,
) -> tuple[Callable[[str], str], Path | None]:
    """How a record's image path becomes a task URL, and the folder a local-files storage must serve (or None)."""
    if image_url_prefix is not None:
        prefix = image_url_prefix.rstrip("/")
        return (lambda path: f"{prefix}/{urllib.parse.quote(path)}"), None
    if image_root is None:
        raise ConfigError("images need --image-url-prefix or an image root")
    root = Path(image_root)
    doc_root = _document_root(root, document_root)
    return (lambda path: local_files_url(root / path, doc_root)), root


def push(
    records: Sequence[RationaleRecord],
    project: str,
    *,
    template: str | os.PathLike[str] = "review_chain",
    image_root: str | os.PathLike[str] | None = None,
    document_root: str | os.PathLike[str] | None = None,
    image_url_prefix: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    queue: Sequence[Any] | None = None,
) -> PushResult:
    """Import ``records`` as tasks of project ``project`` (created with ``template`` when missing), skipping records
    whose id the project already holds. Images by ``image_url_prefix``, else through a local-files storage on
    ``image_root`` (inside ``document_root``). Except for ``draw_chain``, tasks carry the chain as predictions.
    ``queue`` (``virl_data.review.queue.QueueEntry`` s, template ``review_queue``) adds to each listed record's task
    why it is queued and the policy's crops as a read-only layer; pull reads only the chain layer, as always."""
    started = time.perf_counter()
    max_steps = template_steps(load_template(template))
    predictions = template_name(template) != "draw_chain"
    image_url, storage_root = _image_urls(image_root, document_root, image_url_prefix)
    conn = connect(url, api_key)
    proj, created = ensure_project(conn, project, template)
    have = set() if created else {(t.get("data") or {}).get("virl_id") for t in export_tasks(conn, proj.id)}
    if storage_root is not None:
        ensure_local_storage(conn, proj.id, storage_root)
    skipped, tasks, seen = [], [], set(have)
    entries = {e.record_id: e for e in queue or ()}
    for record in records:
        if record.id in seen:  # already a task (or a duplicate id in the corpus): never two tasks for one record
            continue
        seen.add(record.id)
        reason = _skip_reason(record, max_steps, predictions)
        if reason:
            skipped.append((record.id, reason))
        else:
            tasks.append(record_to_task(record, image_url(record.image.path), predictions=predictions,
                                        entry=entries.get(record.id)))
    for start in range(0, len(tasks), BATCH):
        with conn.call(f"import tasks into project {proj.id}"):
            conn.client.projects.import_tasks(proj.id, request=tasks[start : start + BATCH], return_task_ids=True)
    existing = sum(r.id in have for r in records)
    return PushResult(project, proj.id, template_name(template), created, len(tasks), existing, tuple(skipped),
                      time.perf_counter() - started)


# --- pull ------------------------------------------------------------------------------------------------------------
def _check_virl_project(project: Any) -> None:
    """Pull reads ``chain`` rectangles numbered 1..N: a project with another labeling config cannot be read."""
    try:
        template_steps(project.label_config or "")
    except ConfigError:
        raise LabelStudioError(
            f"Label Studio project {project.title!r} (id {project.id}) does not use a virl template (no numbered "
            f"{CHAIN!r} rectangles on {IMAGE!r}); pull from a project made by virl-data labelstudio push"
        ) from None


def pull(
    project: str, records: Sequence[RationaleRecord], *, url: str | None = None, api_key: str | None = None
) -> tuple[list[RationaleRecord], MergeReport]:
    """Merge the annotations of project ``project`` into ``records`` (all returned, same order) with a report."""
    conn = connect(url, api_key)
    proj = find_project(conn, project)
    if proj is None:
        with conn.call("list projects"):
            titles = sorted({p.title for p in conn.client.projects.list()})
        raise LabelStudioError(f"no Label Studio project titled {project!r}; existing: {', '.join(titles) or '(none)'}")
    _check_virl_project(proj)
    tasks = export_tasks(conn, proj.id)
    emails = _emails(conn) if any(t.get("annotations") for t in tasks) else {}
    by_id = {r.id: r for r in records}
    edits: list[ReviewEdit] = []
    unknown: list[str] = []
    invalid: list[tuple[str, str]] = []
    for task in tasks:
        data = task.get("data") or {}
        vid = data.get("virl_id")
        if not vid or "virl_pushed" not in data:
            unknown.append(f"(task {task.get('id')} has no virl_id)")
            continue
        if vid not in by_id:
            unknown.append(vid)
            continue
        task_reviews, task_invalid = task_edits(task, by_id[vid], emails)
        edits += task_reviews
        invalid += task_invalid
    merged, report = merge_reviews(records, edits)
    report.unknown_ids.extend(unknown)
    report.invalid.extend(invalid)
    return merged, report


__all__ = [  # the server side, plus the task and annotation rules re-exported from labelstudio_tasks
    *labelstudio_tasks.__all__,
    "BATCH",
    "Connection",
    "PushResult",
    "connect",
    "ensure_local_storage",
    "ensure_project",
    "export_tasks",
    "find_project",
    "pull",
    "push",
]
