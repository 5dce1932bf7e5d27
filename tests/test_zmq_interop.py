"""A non-Python peer on the ZeroMQ bus: a C program written from docs/wire.md alone.

The program is compiled in the test against Debian's libzmq3-dev. It joins the way the wire
doc says (subscribe, then publish probes on ``$nanomitter.probe.<id>`` until one comes back),
publishes one event, and prints the first event it receives. With NANOMITTER_REQUIRE_PEERS=1
a missing compiler or libzmq fails the run instead of skipping.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

import nanomitter
from peer_policy import skip_or_fail
from peers import Recorder, running
from zmq_support import make_url, zmq_of

pytestmark = pytest.mark.anyio
C_SENDER = "c-peer-0000000000000"  # 21 characters, like every sender id

C_PEER = r"""
/* A nanomitter peer in C (docs/wire.md, "ZeroMQ"): usage
 *   peer PUBLISH_ENDPOINT SUBSCRIBE_ENDPOINT LISTEN_PREFIX EMIT_TOPIC SENDER
 * Prints JOINED, SENT, then "RECV <topic> <envelope hex>" for the first event it gets. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

typedef struct { unsigned char b[512]; size_t n; } buf_t;

static void byte(buf_t *m, unsigned v) { m->b[m->n++] = (unsigned char)v; }
static void str(buf_t *m, const char *s) {
    size_t len = strlen(s);
    if (len < 32) byte(m, 0xa0 | (unsigned)len); else { byte(m, 0xd9); byte(m, (unsigned)len); }
    memcpy(m->b + m->n, s, len); m->n += len;
}
static void uint32(buf_t *m, uint32_t v) {
    if (v < 128) { byte(m, v); return; }
    byte(m, 0xce); byte(m, v >> 24); byte(m, v >> 16); byte(m, v >> 8); byte(m, v);
}

/* The envelope: a msgpack map topic, data, fromLeader, sender, seq. */
static void envelope(buf_t *m, const char *topic, const char *sender, uint32_t seq,
                     const char *data_key, uint32_t data_n) {
    m->n = 0;
    byte(m, 0x85);
    str(m, "topic"); str(m, topic);
    str(m, "data");
    byte(m, 0x82); str(m, "lang"); str(m, "C"); str(m, data_key); uint32(m, data_n);
    str(m, "fromLeader"); byte(m, 0xc2);
    str(m, "sender"); str(m, sender);
    str(m, "seq"); uint32(m, seq);
}

static int publish(void *pub, const char *topic, buf_t *m) {
    if (zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE) < 0) return -1;
    return zmq_send(pub, m->b, m->n, 0);
}

/* Next message as (topic, envelope); returns the envelope size, or -1 on timeout. */
static int next_message(void *sub, char *topic, size_t topic_max, unsigned char *env,
                        size_t env_max, long timeout_ms) {
    zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0) return -1;
    int t = zmq_recv(sub, topic, topic_max - 1, 0);
    if (t < 0) return -1;
    topic[t < (int)topic_max - 1 ? t : (int)topic_max - 1] = 0;
    int more = 0; size_t size = sizeof more;
    zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &size);
    if (!more) return 0;
    int e = zmq_recv(sub, env, env_max, 0);
    return e > (int)env_max ? (int)env_max : e;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: peer PUB SUB LISTEN EMIT SENDER\n"); return 64; }
    const char *sender = argv[5];
    char probe[128], topic[256];
    unsigned char env[65536];
    buf_t m;
    snprintf(probe, sizeof probe, "$nanomitter.probe.%s", sender);

    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    int zero = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, probe, strlen(probe));
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, argv[3], strlen(argv[3]));
    zmq_connect(sub, argv[2]);
    zmq_connect(pub, argv[1]);

    /* Join: probe until our own probe comes back through the hub. */
    int joined = 0;
    for (uint32_t n = 1; n <= 400 && !joined; n++) {
        envelope(&m, probe, sender, 0, "n", n);
        publish(pub, probe, &m);
        while (next_message(sub, topic, sizeof topic, env, sizeof env, 50) >= 0)
            if (strcmp(topic, probe) == 0) { joined = 1; break; }
    }
    if (!joined) { printf("NOJOIN\n"); return 2; }
    printf("JOINED\n"); fflush(stdout);

    envelope(&m, argv[4], sender, 1, "n", 1);
    if (publish(pub, argv[4], &m) < 0) { printf("SENDFAIL\n"); return 3; }
    printf("SENT\n"); fflush(stdout);

    for (;;) {
        int size = next_message(sub, topic, sizeof topic, env, sizeof env, 20000);
        if (size < 0) { printf("TIMEOUT\n"); return 4; }
        if (topic[0] == '$') continue;  /* control traffic: never an event */
        printf("RECV %s ", topic);
        for (int i = 0; i < size; i++) printf("%02x", env[i]);
        printf("\n"); fflush(stdout);
        break;
    }
    int linger = 1000;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sub); zmq_close(pub); zmq_ctx_term(ctx);
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C peer, compiled against the system libzmq (Debian: libzmq3-dev)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        skip_or_fail("no C compiler found (Debian package gcc)")
    assert compiler is not None
    if not Path("/usr/include/zmq.h").exists() and shutil.which("pkg-config") is None:
        skip_or_fail("libzmq headers not found (Debian package libzmq3-dev; .ci/run installs it)")
    directory = tmp_path_factory.mktemp("c-peer")
    source = directory / "peer.c"
    source.write_text(C_PEER)
    binary = directory / "peer"
    flags = ["-lzmq"]
    if shutil.which("pkg-config"):
        found = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libzmq"],
            check=False,
            capture_output=True,
            text=True,
        )
        if found.returncode == 0:
            flags = found.stdout.split()
    built = subprocess.run(
        [compiler, "-std=c99", "-Wall", "-O1", "-o", str(binary), str(source), *flags],
        check=False,
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        skip_or_fail(
            "cannot build the C peer against libzmq (Debian package libzmq3-dev; .ci/run "
            f"installs it): {built.stderr.strip()[:500]}"
        )
    return binary


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_c_peer_and_python_exchange_events(
    c_peer: Path, scheme: str, anyio_backend: str
) -> None:
    url = make_url(scheme)
    async with nanomitter.connect(url) as bus:
        from_c = Recorder()
        bus.on("from.c", from_c)
        await zmq_of(bus).sync_interest()
        endpoints = zmq_of(bus).endpoints
        command = [
            str(c_peer),
            endpoints.publish,
            endpoints.subscribe,
            "from.python",
            "from.c",
            C_SENDER,
        ]
        async with running(command) as (process, output):
            (event,) = await from_c.wait(1)
            assert event.data == {"lang": "C", "n": 1}
            assert (event.sender, event.seq, event.from_leader) == (C_SENDER, 1, False)
            # the peer joined before it published, so its subscription is live by now
            await bus.emit("from.python", {"text": "héllo", "values": [1, 2.5, None]})
            line = await output.wait_for(lambda text: text.startswith(("RECV", "TIMEOUT")))
            await process.wait()
        assert process.returncode == 0, output.lines
        _, topic, hexed = line.split(" ", 2)
        assert topic == "from.python"
        envelope = msgspec.msgpack.decode(bytes.fromhex(hexed))
        assert list(envelope) == ["topic", "data", "fromLeader", "sender", "seq"]
        assert envelope["topic"] == "from.python"
        assert envelope["data"] == {"text": "héllo", "values": [1, 2.5, None]}
        assert (envelope["sender"], envelope["seq"]) == (bus.id, 1)
        assert bus.stats().decode_errors == 0
        assert "JOINED" in output.lines
