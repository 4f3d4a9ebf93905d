"""A kombu transport that lets Celery (or any kombu program) use a Faktory server as its broker.

Selecting the transport
=======================

Importing :mod:`celery_faktory` registers the ``faktory`` alias in ``kombu.transport.TRANSPORT_ALIASES``::

    import celery_faktory  # noqa: F401  (in the module that builds the Celery app)

    app = Celery("proj", broker="faktory://localhost:7419")

Without that import, name the class explicitly; the URL's scheme is then ignored but its host, port and password
are still used (kombu refuses class paths inside URLs)::

    app.conf.broker_transport = "celery_faktory.transport:Transport"
    app.conf.broker_url = "faktory://localhost:7419"

URL forms
---------

``faktory://host:7419``
    Plain TCP (7419 is the default port).
``faktory://:password@host:7419``
    A password-protected server (URL-quote special characters). A user name is sent in HELLO and ignored by
    Faktory.
``faktory://host-a:7419;faktory://host-b:7419``
    Failover: kombu tries the URLs in turn (``broker_failover_strategy``).

TLS cannot be spelt ``faktory+tls://``: kombu splits a ``+`` in the scheme off as a transport name. Turn it on
with any of:

* Celery's ``broker_use_ssl = True`` (system CAs, certificate and host name checked), or a mapping with
  ``ca_certs``, ``certfile``, ``keyfile`` and ``cert_reqs`` (``ssl.CERT_NONE`` / ``CERT_OPTIONAL`` /
  ``CERT_REQUIRED`` or their names); the ``ssl_``-prefixed spellings are accepted too. kombu's
  ``Connection(ssl=...)`` is the same parameter.
* the URL query, which kombu turns into that mapping: ``faktory://host:7419?ssl_cert_reqs=required&
  ssl_ca_certs=/etc/ca.pem``;
* the transport option ``tls`` (same values), which wins over ``ssl``.

Transport options
=================

Set them in Celery's ``broker_transport_options`` (or kombu's ``transport_options``). Durations are seconds.

=======================  =================  ===============================================================
Option                   Default            Meaning
=======================  =================  ===============================================================
``queue_name_prefix``    ``""``             Prepended to every Faktory queue name (``[a-zA-Z0-9._-]*``);
                                            isolates apps (and test runs) sharing a server.
``reserve_for``          ``1800``           Reservation of each job (60 to 86400). An unacknowledged job
                                            comes back only after it, plus Faktory's retry backoff.
``reserve_for_grace``    ``60``             Added to a task's hard time limit: a job's reservation is the
                                            largest of ``reserve_for``, time limit + grace and the
                                            ``faktory_reserve_for`` message header, clamped to 60..86400.
``retry``                ``25``             Faktory ``retry`` of every job (sent explicitly; at least 1).
``priority_steps``       ``[0, 3, 6, 9]``   Priority levels with a Faktory queue each: ``<q>`` for the lowest
                                            step, ``<q>_p<step>`` for the others.
``priority_order``       ``"asc"``          ``"asc"``: higher numbers are served first; ``"desc"``: lower
                                            first (kombu's redis transport).
``eta_threshold``        ``15``             ETAs and countdowns further ahead become the job's ``at``
                                            (Faktory schedules it; its scheduler runs every 5 s). Nearer
                                            ones stay in the worker's memory, unacknowledged.
``reject_policy``        ``"ack"``          Reject without requeue: ``"ack"`` discards, ``"dead"`` moves the
                                            job to Faktory's dead set. Foreign jobs are always FAILed.
``job_args``             ``"native"``       ``"native"``: JSON Celery task messages carry their positional
                                            arguments in ``args`` and keyword arguments in
                                            ``custom.kwargs`` (readable by Go, Ruby, Node workers);
                                            ``"repr"``: envelopes with ``[argsrepr, kwargsrepr]`` as
                                            ``args``; ``"none"``: envelopes with empty ``args``.
``accept_foreign_jobs``  ``True``           Run jobs pushed by other Faktory clients as Celery tasks named by
                                            their jobtype (task id = jid); off, they are FAILed.
``polling_interval``     ``0.1``            ``drain_events`` only: pause between polls that came back at
                                            once (the event loop never pauses: FETCH blocks).
``connect_timeout``      kombu's            Seconds to connect and finish the handshake (kombu's
                                            ``connect_timeout``, Celery's ``broker_connection_timeout``).
``read_timeout``         ``10``             Seconds to wait for any reply (above the 2 s FETCH block).
``command_connections``  ``10``             Most pooled command connections per kombu connection.
``tls``                  ``None``           TLS settings (see above); ``None`` uses kombu's ``ssl``.
``clock``                system clock       A :class:`~celery_faktory.clock.Clock` (tests use a ManualClock).
=======================  =================  ===============================================================

Draining: the event loop and ``drain_events``
=============================================

The transport supports kombu's event loop, so Celery's worker runs its ``asynloop``: before each poll of the hub
a channel with a consumer sends a FETCH (never two at once on its socket) when its QoS allows one more message,
and its FETCH socket is watched; once readable, the reply is read without blocking and its job delivered. An
empty FETCH blocks on the server for 2 s, which is the loop's pause. A warm shutdown therefore takes effect when
the pending FETCH returns. Errors of the FETCH connection propagate out of the loop, so Celery reconnects; a
FETCH left unanswered beyond ``read_timeout`` counts as a broken connection. Plain kombu consumers
(``Connection.drain_events``) use the blocking path, which leaves a FETCH pending when the drain's timeout runs
out and reads it on the next drain. Either way a channel, or its last consumer, that closes with a FETCH in
flight reads its reply first and gives back any job it carries.

What to know
============

* **Redelivery.** A message that is rejected with requeue, or still unacknowledged when its channel closes (a
  warm shutdown), is pushed again at once. After a crash (SIGKILL, OOM) Faktory redelivers only when the
  reservation runs out, then after its retry backoff (at least about 75 s in all). Size ``reserve_for`` (or the
  task time limits) for ``acks_late`` tasks: open-source Faktory cannot extend a reservation.
* **No remote control, no events** in this phase: Faktory has no pub/sub, so the transport offers only ``direct``
  and ``topic`` exchanges (bindings live in each process). Celery then starts workers without pidbox, mingle and
  gossip; ``inspect``/``control``/``revoke`` get no replies and events are dropped. Keep
  ``worker_send_task_events`` and ``task_send_sent_event`` off.
* **purge and len()** count the queues only: scheduled (``at``) and retrying jobs are not included.
* **Connections.** Each consuming channel holds one FETCH connection, and each kombu connection up to
  ``command_connections`` pooled command connections; every prefork child opens its own. Open-source Faktory
  accepts at most 2000 connections.
* **Message TTL** (``expiration``) is emulated: expired messages are ACKed and skipped at FETCH. Celery tasks
  with ``expires`` are always delivered, so the worker records them as REVOKED.
* **Numbers.** Faktory passes ``args`` and ``custom`` through 64-bit floats; for messages holding whole floats or
  integers beyond 2**53 the exact body travels too, so Celery sees them unchanged.
"""

from celery_faktory.transport.channel import Channel, PublishBatch, PublishBatchRejected, RejectedMessage
from celery_faktory.transport.options import TransportOptions
from celery_faktory.transport.transport import Transport

__all__ = ["Channel", "PublishBatch", "PublishBatchRejected", "RejectedMessage", "Transport", "TransportOptions"]
