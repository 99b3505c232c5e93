"""A default release build of the node carries none of the test-only fault switches.

The binding is built as a user builds it (maturin, release, default features), so its extension
module holds a default release build of the node's library: every fault switch lives there
(`net/gate.rs`, `pubsub/router/mod.rs`, `api/history.rs`). Behind the `test-faults` cargo feature
their names are not compiled in at all, so neither the environment variables nor the fetch
API's benchmark knobs can be read. The control: the same search finds every one of them in the
`tidings` binary the Rust tests built with that feature, so the search can fail.
"""

import pathlib
import subprocess

import tidings
from helpers import tidings_bin

# Every fault switch's name as the node reads it: three environment variables and a file gate,
# and the two benchmark fields of `POST /v1/fetch`.
SWITCHES = [
    b"TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD",
    b"TIDINGS_TEST_DROP_DELIVERIES_SEQ_BELOW",
    b"TIDINGS_TEST_DROP_DELIVERIES_ONCE",
    b"TIDINGS_TEST_PARTITION_FILE",
    b"verify_only",
    b"per_block",
]


def test_default_release_build_has_no_fault_switch():
    module = pathlib.Path(tidings._tidings.__file__).read_bytes()
    # It is the node: its own log messages are in there.
    assert b"tidings_node::pubsub::router" in module
    found = [s.decode() for s in SWITCHES if s in module]
    assert not found, f"the release build reads test-only switches: {found}"


def test_the_test_build_has_them_all():
    bin = tidings_bin()
    version = subprocess.run([bin, "--version"], capture_output=True, text=True, check=True)
    assert "(test-faults)" in version.stdout, (
        f"{bin} is not a test-faults build ({version.stdout.strip()}): build it with "
        "`cargo build -p tidings-node --features test-faults` (`cargo test --workspace` does)"
    )
    data = pathlib.Path(bin).read_bytes()
    missing = [s.decode() for s in SWITCHES if s not in data]
    assert not missing, f"the search missed switches the test build has: {missing}"
