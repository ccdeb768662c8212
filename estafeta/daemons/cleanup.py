"""cleanup: the only writer of new queue files (runs in process, in smtpd and pickup).

Owns what a message looks like when it enters the queue: a Received: header on
top; Message-ID: and Date: added when missing (Postfix adds them for local and
trusted clients: local_header_rewrite_clients), and the queue file itself, written
through QueueFileWriter (temp name, fsync, rename) and a shared directory fsync
(DirSyncer: group commit across concurrent sessions). Only after `commit()`
returns may smtpd say 250. Then qmgr is told the new id through its trigger socket;
if that datagram is lost, qmgr's periodic incoming scan still finds the file.
Rewriting through canonical/virtual tables and header_checks arrive with the
tables issue and hook in at `_headers_done`.
"""
from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import time

from ..core import maillog
from ..queue import qfile
from ..queue.store import DirSyncer, QueueFileWriter, QueueStore


class QmgrTrigger:
    """Tells qmgr that a queue id is waiting in incoming/ (one datagram, best effort)."""

    def __init__(self, store: QueueStore, name: str = "qmgr") -> None:
        # public/qmgr as in Postfix's master.cf (private = n); private/ if so configured.
        self.paths = [store.path("public", name), store.path("private", name)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.pending: list[str] = []

    def send(self, word: str) -> None:
        """Queue one word; all words of one event-loop turn go in one datagram, so a
        burst of commits finished by one shared fsync wakes qmgr once."""
        if not self.pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:          # no loop (a command-line tool): send now
                self.pending.append(word)
                self.flush()
                return
        self.pending.append(word)

    def flush(self) -> None:
        words, self.pending = self.pending, []
        data = " ".join(words).encode()
        while data:
            # a datagram stays under the socket's limit: split long bursts
            chunk, data = data[:60000], data[60000:]
            if data:
                cut = chunk.rfind(b" ")
                chunk, data = chunk[:cut], chunk[cut + 1:] + data
            self._send(chunk)

    def _send(self, data: bytes) -> None:
        for path in self.paths:
            try:
                self.sock.sendto(data, path)
                return
            except OSError:
                continue    # qmgr down or its socket full: its periodic scan picks the file up


class Cleanup:
    def __init__(self, cfg, store: QueueStore) -> None:
        self.cfg = cfg
        self.store = store
        self.hostname = cfg.get("myhostname")
        self.sync = cfg.get_bool("fsync_queue")
        self.header_limit = cfg.get_int("header_size_limit")
        self.incoming = store.path("incoming")
        self.syncer = DirSyncer(self.incoming, self.sync)
        self.trigger = QmgrTrigger(store)

    def open(self, queue_id: str, sender: str, recipients: list[tuple[str, dict[str, str]]],
             attrs: dict[str, str], arrival: float | None = None) -> "CleanupTxn":
        return CleanupTxn(self, queue_id, sender, recipients, attrs, arrival or time.time())


class CleanupTxn:
    def __init__(self, owner: Cleanup, queue_id: str, sender: str,
                 recipients: list[tuple[str, dict[str, str]]], attrs: dict[str, str], arrival: float) -> None:
        self.owner = owner
        self.queue_id = queue_id
        self.sender = sender
        self.recipients = recipients
        self.attrs = attrs
        self.arrival = arrival
        self.writer = QueueFileWriter(owner.incoming, queue_id, owner.sync)
        self.writer.write(qfile.encode_envelope(arrival, sender, recipients, attrs))
        self.head: bytearray | None = bytearray()   # buffered until the header ends
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Message content, LF line endings, dot-unstuffed."""
        self.size += len(chunk)
        if self.head is None:
            self.writer.write(chunk)
            return
        self.head += chunk
        end = self.head.find(b"\n\n")
        if self.head.startswith(b"\n"):
            end = -1
            self._headers_done(0)
        elif end >= 0:
            self._headers_done(end + 1)
        elif len(self.head) > self.owner.header_limit:
            self._headers_done(len(self.head))

    def _headers_done(self, end: int) -> None:
        head = bytes(self.head[:end])  # type: ignore[index]
        rest = bytes(self.head[end:])  # type: ignore[index]
        self.head = None
        present = set()
        for line in head.split(b"\n"):
            if line and line[:1] not in b" \t":
                present.add(line.split(b":", 1)[0].strip().lower())
        w = self.writer
        w.write(self._received())
        w.write(head)
        if b"message-id" not in present:
            mid = f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(self.arrival))}.{self.queue_id}@{self.owner.hostname}>"
            w.write(f"Message-Id: {mid}\n".encode())
        else:
            mid = _header_value(head, b"message-id")
        if b"date" not in present:
            w.write(f"Date: {email.utils.formatdate(self.arrival, localtime=True)}\n".encode())
        if b"from" not in present:
            w.write(f"From: <{self.sender or 'MAILER-DAEMON'}>\n".encode("utf-8", "surrogateescape"))
        w.write(rest)
        maillog.log.info(f"{self.queue_id}: message-id={maillog.esc(mid)}")

    def _received(self) -> bytes:
        a = self.attrs
        helo = a.get("helo_name", "")
        client = f"{a.get('client_name', 'unknown')} [{a.get('client_address', '')}]"
        proto = a.get("protocol", "ESMTP")
        frm = f"from {helo} ({client})\n\t" if a.get("client_address") else ""
        forr = f"\n\tfor <{self.recipients[0][0]}>" if len(self.recipients) == 1 else ""
        date = email.utils.formatdate(self.arrival, localtime=True)
        text = f"Received: {frm}by {self.owner.hostname} (estafeta) with {proto} id {self.queue_id}{forr};\n\t{date}\n"
        return text.encode("utf-8", "surrogateescape")

    async def commit(self) -> None:
        """Durable in incoming/ when this returns; raises OSError otherwise (caller: 451)."""
        if self.head is not None:
            self._headers_done(len(self.head))
        try:
            await asyncio.to_thread(self.writer.commit)
            await self.owner.syncer.sync()
        except BaseException:
            self.writer.abort()
            raise
        self.owner.trigger.send(self.queue_id)

    def abort(self) -> None:
        self.writer.abort()


def _header_value(head: bytes, name: bytes) -> str:
    for line in head.split(b"\n"):
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip().decode("utf-8", "replace")
    return ""
