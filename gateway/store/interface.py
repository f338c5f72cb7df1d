"""
The contract of the gateway's store.

The translation code depends on `IStore` only, not on an engine: the store
is `gateway.store.sql.SQLStore`, on SQLite in production and on SQLite's
``:memory:`` with an inline runner in unit tests.  Apart from
`IStore.new_id`, every method returns a `Deferred` (await it from
``async def`` code); errors arrive as failures of that Deferred, never as
synchronous exceptions, so callers have one error path.

Semantics:

* ``*_by_*`` lookups fire with `None` when nothing matches.
* ``update_*`` takes keyword changes of record fields, validated like a new
  record.  An unknown or unchangeable field (``id``; ``account_id`` of owned
  records) fails with `TypeError`; an unknown id with `NotFound`.
* ``add_*`` fails with `Conflict` when the id (or a certificate serial) is
  taken, and with `NotFound` when a record it refers to does not exist or
  belongs to another account (a challenge's authorization, an
  authorization's or certificate's order, a certificate's issuers).  Updates
  that change such a reference are checked the same way.
* A write has been committed to durable storage when its Deferred fires.
  `IStore.write` commits several records at once, all or nothing: each
  logical step (an order with its authorizations and their challenges, an
  authorization with its challenges, a certificate with its issuers, a key
  change) is one call, so a crash never leaves half of one.
* After `IStore.close`, every call fails with `StoreError`.

Upstreams.  A store may be bound to one upstream CA, by its directory URL
(``upstream``; `None` for a store that sees everything, as a unit test or a
read-only tool does).  Orders, authorizations, certificates and order
attempts record the CA they belong to (``directory_url``, stamped on insert
when unset).  A bound store answers every search — ``find_orders``,
``find_authorizations``, ``authorization_by_upstream_url``,
``authorizations_with_status``, ``order_times_since``,
``count_authorizations``, ``open_order_attempts`` — with rows of its own CA
only, and shows an account's ``upstream_url`` only when it was recorded at
that CA (otherwise `None`: the account is found or created again there by
key).  Lookups by id see every row, so that old certificates stay readable
and a v1 URL of another CA can be answered for what it is.  Rows written
before the store recorded CAs count as the bound CA's when their upstream
URL has its origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from gateway.store.records import (
        Account,
        Authorization,
        AuthorizationRead,
        Certificate,
        Challenge,
        ClientVisit,
        Finding,
        Issuer,
        LegacyClient,
        NameReads,
        Operation,
        Order,
        OrderAttempt,
        Record,
        RenewalWindow,
        Spend,
    )


class IStore(Interface):
    """
    Durable gateway state: accounts, and the mapping from the gateway's v1
    URLs to upstream v2 URLs and their owning accounts (MAPPING.md §3.1).
    """

    upstream = Attribute(
        "The directory URL of the CA this store is bound to, or None (see the module "
        "docstring)."
    )

    def write(operations: Iterable[Operation]) -> Deferred[List[Record]]:
        """
        Apply `Insert` and `Update` operations in one transaction: all of
        them, or (when one fails, or the process dies) none.  Each is
        checked as its ``add_*`` or ``update_*`` method would check it, and
        may refer to records inserted earlier in the same call.

        :return: a Deferred firing with the stored or updated records, in
            the order of ``operations``.
        """

    def new_id() -> str:
        """
        Make a fresh id for an order, authorization, challenge or certificate.

        Ids appear in v1 URLs that are read without authentication, so they
        must be unguessable: at least 128 bits from `secrets`, spelled in
        URL-safe base64 without padding.  Synchronous.
        """

    # Accounts

    def create_account(
        thumbprint: str, public_jwk: Mapping[str, Any], contact: Iterable[str] = (),
        agreement: Optional[str] = None, initial_ip: str = "",
        upstream_url: Optional[str] = None, status: str = "valid",
    ) -> Deferred[Account]:
        """
        Create an account with the next integer id (starting at 1, never
        reused) and ``created_at`` set to now.  An ``upstream_url`` is
        recorded as the bound CA's.

        :return: a Deferred firing with the new `Account`, or failing with
            `DuplicateAccount` if ``thumbprint`` is taken.
        """

    def account_by_id(id: int) -> Deferred[Optional[Account]]:
        """
        :return: a Deferred firing with the `Account`, or `None`.
        """

    def account_by_thumbprint(thumbprint: str) -> Deferred[Optional[Account]]:
        """
        Find the account a signed v1 request belongs to.

        :return: a Deferred firing with the `Account`, or `None`.
        """

    def update_account(id: int, /, **changes: Any) -> Deferred[Account]:
        """
        Change an account; ``thumbprint`` and ``public_jwk`` may change (key
        change), failing with `DuplicateAccount` if the new thumbprint is
        another account's.

        :return: a Deferred firing with the updated `Account`.
        """

    def list_accounts() -> Deferred[List[Account]]:
        """
        :return: a Deferred firing with every `Account`, by id.
        """

    # Orders

    def add_order(order: Order) -> Deferred[Order]:
        """
        :return: a Deferred firing with the stored `Order`.
        """

    def order_by_id(id: str) -> Deferred[Optional[Order]]:
        """
        :return: a Deferred firing with the `Order`, or `None`.
        """

    def update_order(id: str, /, **changes: Any) -> Deferred[Order]:
        """
        :return: a Deferred firing with the updated `Order`.
        """

    def find_orders(
        account_id: int, identifiers: Iterable[str], statuses: Optional[Iterable[str]] = None,
    ) -> Deferred[List[Order]]:
        """
        Find an account's orders for exactly this identifier set, e.g. to
        reuse a ready order at v1 new-cert.

        :param identifiers: compared as a set, ignoring case and order.
        :param statuses: the wanted statuses; `None` for any status (an empty
            sequence matches nothing).
        :return: a Deferred firing with a list of `Order`, newest
            ``created_at`` first.
        """

    def planned_orders(
        account_id: int, statuses: Optional[Iterable[str]] = None,
    ) -> Deferred[List[Order]]:
        """
        An account's orders that were planned for a certificate's renewal
        (``planned_for`` set), of the bound CA.

        :param statuses: as for `find_orders`.
        :return: a Deferred firing with a list, newest ``created_at`` first.
        """

    def name_reads(account_id: int, identifier: str, spelled: str, wildcard: bool,
                   statuses: Optional[Iterable[str]],
                   planned_statuses: Iterable[str]) -> Deferred[NameReads]:
        """
        In one call, what a v1 ``new-authz`` for a name reads before it asks
        the CA: the account's `planned_orders` in ``planned_statuses``, each
        with its authorizations for the name; its `current_certificates`
        holding ``spelled``; and `find_authorizations` of ``identifier`` and
        ``wildcard`` in ``statuses``.

        :return: a Deferred firing with a `NameReads`.
        """

    # Authorizations

    def add_authorization(authorization: Authorization) -> Deferred[Authorization]:
        """
        :return: a Deferred firing with the stored `Authorization`.
        """

    def authorization_by_id(id: str) -> Deferred[Optional[Authorization]]:
        """
        :return: a Deferred firing with the `Authorization`, or `None`.
        """

    def authorization_read(id: str) -> Deferred[Optional[AuthorizationRead]]:
        """
        In one call, what a client's read of an authorization needs: the
        authorization (as `authorization_by_id`), its account (as
        `account_by_id`) and its challenges (as
        `challenges_for_authorization`).

        :return: a Deferred firing with an `AuthorizationRead`, or `None`
            when no authorization has the id.
        """

    def authorization_by_upstream_url(
        account_id: int, url: str,
    ) -> Deferred[Optional[Authorization]]:
        """
        Find the gateway authorization for an upstream one, so that an
        upstream authorization reused by a later order keeps its v1 URL.

        Upstream URLs are not unique in the store; if several records match,
        the newest is returned.

        :return: a Deferred firing with the `Authorization`, or `None`.
        """

    def authorizations_by_upstream_urls(
        account_id: int, urls: Iterable[str],
    ) -> Deferred[Dict[str, Tuple[Authorization, Tuple[Challenge, ...]]]]:
        """
        `authorization_by_upstream_url` of several upstream URLs, each
        found authorization with its challenges (as
        `challenges_for_authorization`), in one call: a new order's
        authorizations, which a ``ready`` 3-name order made one store call
        per URL for each read (issue 15).

        :return: a Deferred firing with a mapping from each URL the store
            holds an authorization for (the newest, as
            `authorization_by_upstream_url`) to ``(authorization,
            challenges)``; a URL it holds none for is absent.
        """

    def update_authorization(id: str, /, **changes: Any) -> Deferred[Authorization]:
        """
        :return: a Deferred firing with the updated `Authorization`.
        """

    def authorizations_for_order(order_id: str) -> Deferred[List[Authorization]]:
        """
        :return: a Deferred firing with the order's authorizations, in
            insertion order.
        """

    def find_authorizations(
        account_id: int, identifier: str, wildcard: bool,
        statuses: Optional[Iterable[str]] = None,
    ) -> Deferred[List[Authorization]]:
        """
        Find an account's authorizations for one name, e.g. to answer a v1
        new-authz with an existing pending or valid authorization.

        :param identifier: compared case-insensitively; for a wildcard the
            base domain.
        :param statuses: as for `find_orders`.
        :return: a Deferred firing with a list, newest ``created_at`` first.
        """

    def find_authorizations_of_names(
        account_id: int, names: Iterable[Tuple[str, bool]],
        statuses: Optional[Iterable[str]] = None,
    ) -> Deferred[List[List[Authorization]]]:
        """
        `find_authorizations` of several names, in one call: a ``new-cert``
        checks that the account asked to authorize each name of its CSR,
        one store call per name before issue 15's fifth round.

        :param names: ``(identifier, wildcard)`` pairs.
        :return: a Deferred firing with `find_authorizations`' answer for
            each name, in the order of ``names``.
        """

    def order_times_since(account_id: int, since: str) -> Deferred[List[str]]:
        """
        When the account created each of its orders at or after ``since``
        (RFC 3339): the spend of the upstream new-orders budget in a sliding
        window, and when the oldest of it leaves the window.

        :return: a Deferred firing with a list of timestamps, oldest first.
        """

    def authorizations_with_status(
        status: str, account_id: Optional[int] = None, created_before: Optional[str] = None,
    ) -> Deferred[List[Authorization]]:
        """
        Authorizations in ``status``, optionally only an account's, and only
        those created before ``created_before`` (RFC 3339): the pending
        authorizations budget, and the sweep of abandoned ones.

        :return: a Deferred firing with a list, oldest first.
        """

    def open_order_attempts() -> Deferred[List[OrderAttempt]]:
        """
        The `OrderAttempt` records of the bound CA still ``open`` whose order
        was never stored: ``newOrder`` requests whose answer was lost.

        :return: a Deferred firing with a list, oldest first.
        """

    # Challenges

    def add_challenge(challenge: Challenge) -> Deferred[Challenge]:
        """
        :return: a Deferred firing with the stored `Challenge`.
        """

    def challenge_by_id(id: str) -> Deferred[Optional[Challenge]]:
        """
        :return: a Deferred firing with the `Challenge`, or `None`.
        """

    def challenges_for_authorization(authorization_id: str) -> Deferred[List[Challenge]]:
        """
        :return: a Deferred firing with the challenges, in insertion order
            (the order the v1 ``challenges`` array shows them in).
        """

    def update_challenge(id: str, /, **changes: Any) -> Deferred[Challenge]:
        """
        :return: a Deferred firing with the updated `Challenge`.
        """

    # Certificates

    def add_certificate(certificate: Certificate) -> Deferred[Certificate]:
        """
        :return: a Deferred firing with the stored `Certificate`, or failing
            with `Conflict` if the serial is already stored.
        """

    def certificate_by_id(id: str) -> Deferred[Optional[Certificate]]:
        """
        :return: a Deferred firing with the `Certificate`, or `None`.
        """

    def certificate_by_serial(serial: str) -> Deferred[Optional[Certificate]]:
        """
        :return: a Deferred firing with the `Certificate`, or `None`.
        """

    def update_certificate(id: str, /, **changes: Any) -> Deferred[Certificate]:
        """
        E.g. record a revocation.

        :return: a Deferred firing with the updated `Certificate`.
        """

    def certificates_for_account(account_id: int) -> Deferred[List[Certificate]]:
        """
        :return: a Deferred firing with the account's certificates, newest
            ``issued_at`` first.
        """

    def current_certificates(account_id: Optional[int] = None,
                             name: Optional[str] = None) -> Deferred[List[Certificate]]:
        """
        The renewal inventory: of each account's certificates that are not
        orphans, the newest for each name set (by the start of validity), of
        every CA — issued through the gateway or imported by ``adopt``.

        :param account_id: only this account's, and :param name: only those
            holding this name (spelled as a certificate spells it): what one
            flow needs, where the whole inventory grows with every
            certificate issued.
        :return: a Deferred firing with a list, newest first.
        """

    def renewal_window(certificate_id: str) -> Deferred[Optional[RenewalWindow]]:
        """
        :return: a Deferred firing with the certificate's `RenewalWindow`,
            or `None` before the CA was first asked.
        """

    def renewal_windows() -> Deferred[List[RenewalWindow]]:
        """
        Every `RenewalWindow`, of every CA (for the report).

        :return: a Deferred firing with a list, in insertion order.
        """

    def orphaned_certificates() -> Deferred[List[Certificate]]:
        """
        Every certificate marked ``orphaned``, of any CA, for the migration
        report.

        :return: a Deferred firing with a list, newest ``issued_at`` first.
        """

    # Issuers

    def add_issuer(der: bytes, parent_id: Optional[str] = None) -> Deferred[Issuer]:
        """
        Store an issuer certificate; idempotent for the same DER.  A
        ``parent_id`` (the issuer above it in the chain being stored)
        replaces the one recorded; `None` keeps it.

        :return: a Deferred firing with the `Issuer`, whose id is
            `gateway.store.records.issuer_id` of ``der``, or failing with
            `NotFound` when ``parent_id`` is not stored, `ValueError` when
            it is the issuer's own id.
        """

    def issuer_by_id(id: str) -> Deferred[Optional[Issuer]]:
        """
        :return: a Deferred firing with the `Issuer`, or `None`.
        """

    # The migration report

    def record_clients(visits: Iterable[ClientVisit]) -> Deferred[List[LegacyClient]]:
        """
        Record several visits in one transaction (the batched form of
        `record_client`).

        :return: a Deferred firing with the updated clients of the visits
            that counted, in order.
        """

    def record_client(visit: ClientVisit) -> Deferred[Optional[LegacyClient]]:
        """
        Count one v1 request (a `ClientVisit`) in its client's report row:
        one upsert per request.  A signed visit of a client never seen makes
        its row (while the report holds fewer than
        `gateway.store.records.MAX_CLIENTS`; then it counts in the overflow
        row); an unsigned one counts only toward a row that exists
        (`gateway.store.records.makes_no_row`).

        :return: a Deferred firing with the updated `LegacyClient`, or
            `None` for an unsigned visit of a client never seen.
        """

    def list_clients() -> Deferred[List[LegacyClient]]:
        """
        :return: a Deferred firing with every `LegacyClient`, most recently
            seen first.
        """

    # Operations

    def count_authorizations(status: str, unexpired_at: Optional[str] = None) -> Deferred[int]:
        """
        Count authorizations in ``status``; with ``unexpired_at`` (a
        timestamp), only those whose ``expires`` is unknown or later, so that
        pending authorizations clients abandoned stop counting once the CA
        has let them expire.

        :return: a Deferred firing with an `int`.
        """

    def inconsistencies() -> Deferred[List[Finding]]:
        """
        What a crash or an outside edit left incomplete, of every CA: open
        order attempts without their order, unexpired pending
        authorizations without challenges, unexpired pending or ready
        orders without their authorizations, and rows whose parent is
        missing.  Recovery repairs those of the
        bound CA from the CA; ``acme-gateway check`` reports them.

        :return: a Deferred firing with a list of `Finding`.
        """

    # Shared by every process on the store (--workers, replicas)

    def spend(account_id: int, since: str) -> Deferred[Spend]:
        """
        What the account has spent of its rate-limit budget, read in one
        transaction: order times since ``since`` (orders, and attempts not
        refused whose order was never stored), its pending authorizations,
        and the names of its attempts still open (orders in flight, whose
        authorizations are not stored yet).
        """

    def reserve(attempt: OrderAttempt, since: str, orders: int,
                pending_authorizations: int, now: float) -> Deferred[Tuple[Spend, bool]]:
        """
        Record ``attempt`` if the account's budget admits it, in one write
        transaction: the account's `spend` since ``since``, then — when
        `Spend.admits` one more order of the attempt's identifiers under
        ``orders`` and ``pending_authorizations`` at ``now`` —
        the attempt inserted.  Write transactions exclude each other across
        processes and replicas, so no other reservation falls between the
        check and the record, with no lock and one thread hand-off (the
        budget's lock and its two transactions cost a ``new-authz`` four,
        issue 15).

        :return: a Deferred firing with the spend seen (to word a refusal)
            and whether the attempt was recorded.
        """

    def secret(name: str, size: int = 32) -> Deferred[bytes]:
        """
        The random secret called ``name``, made (``size`` bytes) by the
        first process that asks and the same for every process after it.
        """

    def use_nonce(nonce: str, expires_at: int) -> Deferred[bool]:
        """
        Mark ``nonce`` used; `True` the first time, `False` when any process
        already used it.  ``expires_at`` (Unix seconds) is when it would
        be refused anyway, after which its row may be pruned.  Committed
        without waiting for the disk: a used nonce survives the process,
        not a power loss.
        """

    def publish_answer(token: str, key_authorization: str, expires_at: int) -> Deferred[None]:
        """
        Make an HTTP-01 ``token``'s key authorization answerable by every
        process, until `withdraw_answer` or ``expires_at`` (Unix seconds).
        """

    def withdraw_answer(token: str) -> Deferred[None]:
        """
        Stop answering ``token`` (see `publish_answer`).
        """

    def answer_for(token: str) -> Deferred[Optional[str]]:
        """
        The key authorization published for ``token`` and not expired, or
        `None`.
        """

    def try_lock(name: str) -> Deferred[bool]:
        """
        Take the named lock if no other process holds it, without waiting
        (`gateway.store.engine.Database.try_lock`): held until `unlock`,
        or until this process dies.
        """

    def unlock(name: str) -> Deferred[None]:
        """
        Give back one `try_lock` of ``name``.
        """

    def check_writable() -> Deferred[None]:
        """
        Commit a small write, to tell a readiness probe whether state can
        still be saved (disk full, read-only volume, lost lock).

        :return: a Deferred firing with `None`, or failing with the reason.
        """

    def close() -> Deferred[None]:
        """
        Release the store's resources, after the calls already made.
        Idempotent.

        :return: a Deferred firing with `None` once closed.
        """
