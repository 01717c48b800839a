"""The ChatKit SDK's `Store` on codexweb's database.

Every query is scoped to the caller's Codex session (`RuntimeContext.session_id`), which the
token check already tied to its user: another session's thread, item or attachment is
`NotFoundError` to the SDK, exactly as if it did not exist. The SDK's own JSON of each object
is stored as it gave it, so what the protocol reads back is what it wrote.

The methods are `async` because the SDK awaits them; they run plain SQLAlchemy on the event
loop the request has to itself, in its own thread (see `runtime/loops.py`), so
Flask-SQLAlchemy's scoped session and the app context work as in any view.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, Thread, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy import and_, delete, or_, select, update

from ..clock import utcnow
from ..codex import sessions
from ..extensions import db
from ..logging import emit
from ..models import ChatKitAttachment, ChatKitItem, ChatKitThread
from .context import RuntimeContext

ITEM_ADAPTER: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
ATTACHMENT_ADAPTER: TypeAdapter[Attachment] = TypeAdapter(Attachment)
# Ids come from the SDK (`thr_…`, `msg_…`) or the client; anything longer cannot be ours.
MAX_ID_LENGTH = 64


def _aware(moment: datetime) -> datetime:
    # The SDK stamps items with naive local time (`datetime.now()`): astimezone reads it so.
    return moment.astimezone(UTC)


def _plausible_id(value: Any) -> bool:
    # PostgreSQL refuses NUL in text (a 500) where SQLite just finds no row.
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value


def _newest_remembered(
    context: RuntimeContext, thread_id: str, limit: int
) -> Page[ThreadItem] | None:
    """The newest `limit` items of the thread from this request's last read of them, when that
    read reached as many (or all there are) and the request has not written to the thread
    since; None otherwise.

    A turn reads the agent's history (the newest 100 items), then the ChatKit SDK reads the
    newest two to continue a workflow: the second is the first's beginning, without another
    query and parse (one database round trip fewer before every reply's first token).
    """
    remembered = context.newest_items.get(thread_id)
    if remembered is None:
        return None
    newest, more = remembered
    if len(newest) < limit and more:
        return None  # the thread has items the remembered read did not reach
    return _page(list(newest[:limit]), more or len(newest) > limit)


# The most a page of threads or items holds, whatever a request asks: a client's `limit` of
# 10**20 overflowed the database driver (a 500), and a negative one made a nonsense page.
MAX_PAGE_SIZE = 1000


def _page_size(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE_SIZE))


def _page(items: list[ThreadItem], has_more: bool) -> Page[ThreadItem]:
    return Page(data=items, has_more=has_more, after=items[-1].id if items else None)


class SessionStore(Store[RuntimeContext]):
    # Threads --------------------------------------------------------------------------

    def _thread_row(self, thread_id: str, context: RuntimeContext) -> ChatKitThread:
        row = None
        if _plausible_id(thread_id):
            row = db.session.scalars(
                select(ChatKitThread).where(
                    ChatKitThread.id == thread_id,
                    ChatKitThread.codex_session_id == context.session_id,
                    ChatKitThread.user_id == context.user_id,
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return row

    def _check_thread(self, thread_id: str, context: RuntimeContext) -> None:
        """`NotFoundError` unless the thread is the caller's; read once per request and thread.

        Ownership never changes, so the first answer holds for the rest of the request. A
        thread another request deletes meanwhile is the race a fresh read had too: an item
        written to it fails on the foreign key (both databases enforce it).
        """
        if thread_id not in context.known_threads:
            self._thread_row(thread_id, context)
            context.known_threads.add(thread_id)

    async def load_thread(self, thread_id: str, context: RuntimeContext) -> ThreadMetadata:
        row = self._thread_row(thread_id, context)
        context.known_threads.add(thread_id)
        return ThreadMetadata.model_validate(row.data)

    def generate_thread_id(self, context: RuntimeContext) -> str:
        """The SDK's id (`thr_` and 32 random bits) with 96 more random bits.

        Thread ids are one key across every session, and 32 bits collide by the million: a
        user's new thread would have met another user's. A 128-bit id never does, which is
        also what lets its first save insert without reading for it.
        """
        thread_id = super().generate_thread_id(context) + secrets.token_hex(12)
        context.new_threads.add(thread_id)
        return thread_id

    async def save_thread(self, thread: ThreadMetadata, context: RuntimeContext) -> None:
        # A full `Thread` carries its items too; those are stored item by item.
        fields = thread.model_dump(
            mode="json", exclude={"items"} if isinstance(thread, Thread) else None
        )
        if thread.id in context.new_threads:  # made here just now: no row can exist
            context.new_threads.discard(thread.id)
            row = None
        else:
            row = db.session.get(ChatKitThread, thread.id)
        if row is None:
            db.session.add(
                ChatKitThread(
                    id=thread.id,
                    codex_session_id=context.session_id,
                    user_id=context.user_id,
                    created_at=_aware(thread.created_at),
                    data=fields,
                )
            )
            emit("chatkit.thread.created", **context.event_fields(thread.id))
        elif row.codex_session_id != context.session_id or row.user_id != context.user_id:
            raise NotFoundError(f"Thread {thread.id} not found")
        else:
            row.data = fields
        db.session.commit()
        context.known_threads.add(thread.id)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RuntimeContext
    ) -> Page[ThreadMetadata]:
        limit = _page_size(limit)
        query = select(ChatKitThread).where(
            ChatKitThread.codex_session_id == context.session_id,
            ChatKitThread.user_id == context.user_id,
        )
        columns = (ChatKitThread.created_at, ChatKitThread.id)
        if after:
            anchor = self._thread_row(after, context)
            query = query.where(_beyond(columns, (anchor.created_at, anchor.id), order))
        rows = db.session.scalars(query.order_by(*_ordered(columns, order)).limit(limit + 1)).all()
        threads = [ThreadMetadata.model_validate(row.data) for row in rows[:limit]]
        return Page(
            data=threads,
            has_more=len(rows) > limit,
            after=threads[-1].id if threads else None,
        )

    async def delete_thread(self, thread_id: str, context: RuntimeContext) -> None:
        row = self._thread_row(thread_id, context)
        # Explicit child delete: the ORM deletes the parent row by primary key, and the items
        # must go whatever the connection's foreign-key settings.
        db.session.execute(delete(ChatKitItem).where(ChatKitItem.thread_id == row.id))
        db.session.delete(row)
        # The session's current thread is gone: none until the user writes again, so a
        # client resuming the session is never handed a thread that does not exist.
        sessions.clear_current_thread(context.codex_session, thread_id)
        db.session.commit()
        context.known_threads.discard(thread_id)
        context.newest_items.pop(thread_id, None)

    # Items ----------------------------------------------------------------------------

    def _item_row(self, thread_id: str, item_id: str, context: RuntimeContext) -> ChatKitItem:
        row = None
        if _plausible_id(thread_id) and _plausible_id(item_id):
            row = db.session.scalars(
                select(ChatKitItem).where(
                    ChatKitItem.thread_id == thread_id,
                    ChatKitItem.item_id == item_id,
                    ChatKitItem.codex_session_id == context.session_id,
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Item {item_id} not found")
        return row

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: RuntimeContext,
    ) -> Page[ThreadItem]:
        limit = _page_size(limit)
        if after is None and order == "desc":
            remembered = _newest_remembered(context, thread_id, limit)
            if remembered is not None:
                return remembered
        self._check_thread(thread_id, context)
        query = select(ChatKitItem).where(
            ChatKitItem.thread_id == thread_id,
            ChatKitItem.codex_session_id == context.session_id,
        )
        if after:
            anchor = self._item_row(thread_id, after, context)
            position = ChatKitItem.position
            query = query.where(
                position < anchor.position if order == "desc" else position > anchor.position
            )
        ordering = ChatKitItem.position.desc() if order == "desc" else ChatKitItem.position.asc()
        rows = db.session.scalars(query.order_by(ordering).limit(limit + 1)).all()
        items = [ITEM_ADAPTER.validate_python(row.data) for row in rows[:limit]]
        if after is None and order == "desc":
            # A copy of the list: the caller may reorder the page it gets.
            context.newest_items[thread_id] = (tuple(items), len(rows) > limit)
        return _page(items, len(rows) > limit)

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: RuntimeContext
    ) -> None:
        self._check_thread(thread_id, context)
        context.newest_items.pop(thread_id, None)
        db.session.add(self._new_item_row(thread_id, item, context))
        if item.type == "user_message":
            # The thread the user writes in becomes the session's current one, in the same
            # commit as the message: a commit of its own delayed every reply's first token
            # (one more round trip and, on PostgreSQL, one more wait for the WAL flush).
            sessions.set_current_thread(context.codex_session, thread_id, commit=False)
        db.session.commit()

    async def save_item(self, thread_id: str, item: ThreadItem, context: RuntimeContext) -> None:
        self._check_thread(thread_id, context)
        context.newest_items.pop(thread_id, None)
        row = db.session.scalars(
            select(ChatKitItem).where(
                ChatKitItem.thread_id == thread_id,
                ChatKitItem.item_id == item.id,
                ChatKitItem.codex_session_id == context.session_id,
            )
        ).first()
        if row is None:
            db.session.add(self._new_item_row(thread_id, item, context))
        else:
            row.data = item.model_dump(mode="json")
            row.kind = item.type
        db.session.commit()

    async def load_item(self, thread_id: str, item_id: str, context: RuntimeContext) -> ThreadItem:
        return ITEM_ADAPTER.validate_python(self._item_row(thread_id, item_id, context).data)

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: RuntimeContext
    ) -> None:
        db.session.delete(self._item_row(thread_id, item_id, context))
        db.session.commit()
        context.newest_items.pop(thread_id, None)

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], kind: str, context: RuntimeContext
    ) -> None:
        """Keep the user's verdict on the items: on all of them, or on none when one of them
        is not an item of this thread in this session (`NotFoundError`, a 404; the UPDATE's
        own filter is the ownership check)."""
        ids = list(dict.fromkeys(item_ids))
        if len(ids) > MAX_PAGE_SIZE:
            raise ValueError(f"At most {MAX_PAGE_SIZE} items at once.")
        if not ids or not all(_plausible_id(item_id) for item_id in ids):
            raise NotFoundError("No such item")
        marked = db.session.execute(
            update(ChatKitItem)
            .where(
                ChatKitItem.thread_id == thread_id,
                ChatKitItem.codex_session_id == context.session_id,
                ChatKitItem.item_id.in_(ids),
            )
            .values(feedback=kind, feedback_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if marked != len(ids):
            db.session.rollback()
            raise NotFoundError("No such item")
        db.session.commit()

    @staticmethod
    def _new_item_row(thread_id: str, item: ThreadItem, context: RuntimeContext) -> ChatKitItem:
        return ChatKitItem(
            item_id=item.id,
            thread_id=thread_id,
            codex_session_id=context.session_id,
            kind=item.type,
            created_at=_aware(item.created_at),
            data=item.model_dump(mode="json"),
        )

    # Attachments (metadata only) ------------------------------------------------------

    def _attachment_row(self, attachment_id: str, context: RuntimeContext) -> ChatKitAttachment:
        row = (
            db.session.get(ChatKitAttachment, attachment_id)
            if _plausible_id(attachment_id)
            else None
        )
        if row is None or row.codex_session_id != context.session_id:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return row

    async def save_attachment(self, attachment: Attachment, context: RuntimeContext) -> None:
        row = db.session.get(ChatKitAttachment, attachment.id)
        data = attachment.model_dump(mode="json")
        if row is None:
            db.session.add(
                ChatKitAttachment(id=attachment.id, codex_session_id=context.session_id, data=data)
            )
        elif row.codex_session_id != context.session_id:
            raise NotFoundError(f"Attachment {attachment.id} not found")
        else:
            row.data = data
        db.session.commit()

    async def load_attachment(self, attachment_id: str, context: RuntimeContext) -> Attachment:
        return ATTACHMENT_ADAPTER.validate_python(self._attachment_row(attachment_id, context).data)

    async def delete_attachment(self, attachment_id: str, context: RuntimeContext) -> None:
        db.session.delete(self._attachment_row(attachment_id, context))
        db.session.commit()


def _ordered(columns: tuple, order: str) -> list:
    return [column.desc() if order == "desc" else column.asc() for column in columns]


def _beyond(columns: tuple, anchor: tuple, order: str):
    """Keyset condition: rows after `anchor` in `order` over (created_at, id)."""
    (created, row_id), (anchor_created, anchor_id) = columns, anchor
    if order == "desc":
        return or_(created < anchor_created, and_(created == anchor_created, row_id < anchor_id))
    return or_(created > anchor_created, and_(created == anchor_created, row_id > anchor_id))
