#!/usr/bin/env python3
"""A plain pyarrow.flight client against one dagml worker's Flight service.

Usage: flight_conformance.py HOST:PORT [TOKEN]

Puts small tables under `conformance/...` keys, lists them, reads them back by
the listed tickets, and checks the calls the worker does not implement fail
cleanly. With TOKEN (the worker's DAGML_TOKEN), every call carries
`authorization: Bearer TOKEN`, and calls without it or with a wrong one must be
refused as unauthenticated.

Prints one line per check (`ok   ...` or `FAIL ...`) and exits 1 if any failed
(2 on bad usage). Run by tests/flight_conformance.rs.
"""

import sys
import traceback

import pyarrow as pa
import pyarrow.flight as flight

KEY = "conformance/t1"
EMPTY_KEY = "conformance/empty"
REFUSED_KEY = "conformance/refused"
MISSING_KEY = "conformance/no-such-partition"
CALL_TIMEOUT = 30.0  # seconds, per call

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("label", pa.utf8()),
    ]
)

BATCHES = [
    pa.record_batch(
        [
            pa.array([1, 2, None], pa.int64()),
            pa.array([0.5, None, -1.25], pa.float64()),
            pa.array(["a", "béta", None], pa.utf8()),
        ],
        schema=SCHEMA,
    ),
    pa.record_batch(
        [
            pa.array([4, -5], pa.int64()),
            pa.array([float("inf"), 1e300], pa.float64()),
            pa.array(["", "last row"], pa.utf8()),
        ],
        schema=SCHEMA,
    ),
]
TABLE = pa.Table.from_batches(BATCHES, schema=SCHEMA)

failures = []


def check(name, fn):
    """Run one check; print its line; remember a failure."""
    try:
        detail = fn()
    except Exception as e:  # noqa: BLE001 - any exception is a failed check
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(file=sys.stdout)
        return False
    print(f"ok   {name}" + (f" ({detail})" if detail else ""), flush=True)
    return True


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(kinds, fn, what):
    """`fn()` must raise one of `kinds`; returns the error's type name."""
    try:
        fn()
    except kinds as e:
        return type(e).__name__
    except Exception as e:  # noqa: BLE001
        raise AssertionError(
            f"{what}: expected {kinds}, got {type(e).__name__}: {e}"
        ) from e
    raise AssertionError(f"{what}: no error")


def options(token):
    headers = []
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return flight.FlightCallOptions(timeout=CALL_TIMEOUT, headers=headers)


def put(client, key, batches, opts):
    writer, reader = client.do_put(
        flight.FlightDescriptor.for_path(key), SCHEMA, options=opts
    )
    for b in batches:
        writer.write_batch(b)
    writer.close()


def listed(client, opts):
    """Every FlightInfo the worker lists, by its one-element path."""
    out = {}
    for info in client.list_flights(options=opts):
        d = info.descriptor
        expect(
            d.descriptor_type == flight.DescriptorType.PATH,
            f"descriptor type {d.descriptor_type}",
        )
        expect(len(d.path) == 1, f"path {d.path!r} is not one element")
        out[d.path[0].decode()] = info
    return out


def read(client, ticket, opts):
    return client.do_get(ticket, options=opts).read_all()


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    addr = argv[1]
    token = argv[2] if len(argv) == 3 else None
    location = addr if "://" in addr else f"grpc://{addr}"
    print(f"pyarrow {pa.__version__}, worker at {location}, token: {token is not None}")
    client = flight.FlightClient(location)
    opts = options(token)
    state = {}

    if token is not None:
        # Refused: no header, or a wrong token, on reads and on writes.
        unauth = flight.FlightUnauthenticatedError
        for label, bad in [("without the token", options(None)),
                           ("with a wrong token", options(token + "-wrong"))]:
            check(
                f"list_flights {label} is refused",
                lambda bad=bad: expect_error(
                    unauth, lambda: list(client.list_flights(options=bad)), "list_flights"
                ),
            )
            check(
                f"do_get {label} is refused",
                lambda bad=bad: expect_error(
                    unauth,
                    lambda: read(client, flight.Ticket(KEY.encode()), bad),
                    "do_get",
                ),
            )
            check(
                f"do_put {label} is refused",
                lambda bad=bad: expect_error(
                    unauth, lambda: put(client, REFUSED_KEY, BATCHES, bad), "do_put"
                ),
            )

    def do_put():
        put(client, KEY, BATCHES, opts)
        return f"{TABLE.num_rows} rows in {len(BATCHES)} batches under {KEY}"

    check("do_put a table (int64, float64, utf8, with nulls)", do_put)

    def do_put_empty():
        put(client, EMPTY_KEY, [], opts)
        return f"schema only, under {EMPTY_KEY}"

    check("do_put a table with no batches", do_put_empty)

    def list_them():
        infos = listed(client, opts)
        state["infos"] = infos
        expect(KEY in infos, f"{KEY} not listed; listed: {sorted(infos)}")
        info = infos[KEY]
        expect(
            info.schema.equals(SCHEMA),
            f"listed schema\n{info.schema}\n!= put schema\n{SCHEMA}",
        )
        expect(
            info.total_records == TABLE.num_rows,
            f"total_records {info.total_records} != {TABLE.num_rows}",
        )
        expect(info.total_bytes > 0, f"total_bytes {info.total_bytes}")
        expect(len(info.endpoints) == 1, f"{len(info.endpoints)} endpoints")
        expect(
            info.endpoints[0].ticket.ticket == KEY.encode(),
            f"ticket {info.endpoints[0].ticket.ticket!r} != {KEY!r}",
        )
        if token is not None:
            expect(REFUSED_KEY not in infos, f"{REFUSED_KEY} was stored without the token")
        return f"{len(infos)} listed; {KEY}: {info.total_records} rows, {info.total_bytes} bytes"

    check("list_flights lists the key with its schema and row count", list_them)

    def list_empty():
        info = state["infos"][EMPTY_KEY]
        expect(info.schema.equals(SCHEMA), f"listed schema {info.schema}")
        expect(info.total_records == 0, f"total_records {info.total_records}")
        return None

    check("list_flights lists the empty table with 0 rows", list_empty)

    def get_it():
        info = state["infos"][KEY]
        got = read(client, info.endpoints[0].ticket, opts)
        expect(got.schema.equals(SCHEMA), f"schema\n{got.schema}\n!= \n{SCHEMA}")
        expect(got.equals(TABLE), f"got\n{got.to_pydict()}\n!= put\n{TABLE.to_pydict()}")
        return f"{got.num_rows} rows, equal to the table put"

    check("do_get by the listed ticket gives the table put", get_it)

    def get_empty():
        got = read(client, state["infos"][EMPTY_KEY].endpoints[0].ticket, opts)
        expect(got.schema.equals(SCHEMA), f"schema {got.schema}")
        expect(got.num_rows == 0, f"{got.num_rows} rows")
        return None

    check("do_get of the empty table gives 0 rows and the schema", get_empty)

    check(
        "do_get of a missing key fails cleanly (not found)",
        lambda: expect_error(
            KeyError,  # pyarrow maps gRPC NOT_FOUND to ArrowKeyError
            lambda: read(client, flight.Ticket(MISSING_KEY.encode()), opts),
            "do_get missing",
        ),
    )

    descriptor = flight.FlightDescriptor.for_path(KEY)
    # Not implemented by the worker (it serves list_flights): must fail cleanly.
    check(
        "get_flight_info fails cleanly (not implemented)",
        lambda: expect_error(
            pa.ArrowNotImplementedError,
            lambda: client.get_flight_info(descriptor, options=opts),
            "get_flight_info",
        ),
    )
    check(
        "get_schema fails cleanly (not implemented)",
        lambda: expect_error(
            pa.ArrowNotImplementedError,
            lambda: client.get_schema(descriptor, options=opts),
            "get_schema",
        ),
    )
    check(
        "do_put with a command descriptor is rejected",
        lambda: expect_error(
            pa.ArrowInvalid,
            lambda: client.do_put(
                flight.FlightDescriptor.for_command(b"x"), SCHEMA, options=opts
            )[0].close(),
            "do_put command",
        ),
    )
    check(
        "list_actions answers (no actions)",
        lambda: expect(
            list(client.list_actions(options=opts)) == [], "actions listed"
        ),
    )

    client.close()
    if failures:
        print(f"{len(failures)} check(s) failed: {failures}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
