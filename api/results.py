"""`GET /v1/batches/<id>/results`: every call of a batch, streamed as JSONL or CSV from a
server-side cursor (`batchcalls.adapters.store.results`), in constant memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from flask import Blueprint, Response, request, stream_with_context

from api.batches import current_engine, own_batch
from batchcalls.adapters.store import results as store
from batchcalls.adapters.store.db import Database
from batchcalls.domain import results

bp = Blueprint("results", __name__, url_prefix="/v1")


@bp.get("/batches/<batch_id>/results")
def batch_results(batch_id: str) -> Response:
    accept = [media_type for media_type, _ in request.accept_mimetypes]
    chosen = results.choose_format(request.args.get("format"), accept)
    db = current_engine().db
    with db.transaction() as cur:
        own_batch(cur, batch_id)
    return export(db, batch_id, chosen)


def export(db: Database, batch_id: str, chosen: str) -> Response:
    """The batch's results in the `chosen` format (`results.CSV` or `results.JSONL`), streamed;
    the caller has checked the batch is the tenant's."""
    if chosen == results.CSV:
        body = _csv(db, batch_id, results.answer_columns(store.first_script(db, batch_id)))
    else:
        body = _jsonl(db, batch_id)
    response = Response(stream_with_context(body), mimetype=results.MEDIA_TYPES[chosen])
    response.headers["Content-Disposition"] = f'attachment; filename="{batch_id}.{chosen}"'
    return response


def _jsonl(db: Database, batch_id: str) -> Iterator[str]:
    for rows in store.result_chunks(db, batch_id, as_lines=True):
        yield "\n".join(row[0] for row in rows) + "\n"


def _csv(db: Database, batch_id: str, names: list[str]) -> Iterator[str]:
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow(results.csv_header(names))
    yield header.getvalue()
    for rows in store.result_chunks(db, batch_id, as_lines=False):
        yield results.csv_lines(rows, names)
